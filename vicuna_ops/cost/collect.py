"""Each run's cost from the ledger (after ``vops cost sync``): the shell around the model.

Prices come from SkyPilot's catalog; where it has none (or SkyPilot is not installed), from
the run's own price table that sync copied from its bucket.
"""

from __future__ import annotations

from vicuna_ops.cost.billing import with_job_times
from vicuna_ops.cost.model import RunCost, run_cost
from vicuna_ops.cost.price_table import PriceTable
from vicuna_ops.cost.prices import CatalogPrices, Price, PriceFn, PriceQuery, unpriced
from vicuna_ops.cost.sync import recoveries
from vicuna_ops.errors import UserError
from vicuna_ops.segments import SegmentRecord


class RunPrices:
    """SkyPilot's catalog first, then the run's price table. One catalog for all runs, so
    its cache is shared."""

    def __init__(self, catalog: PriceFn | None = None) -> None:
        self._catalog = catalog if catalog is not None else CatalogPrices()
        self._sky_missing: str | None = None

    def for_run(self, table: PriceTable | None) -> PriceFn:
        def price(query: PriceQuery) -> Price:
            answer = self._from_catalog(query)
            if answer.priced or table is None:
                return answer
            fallback = table(query)
            return fallback if fallback.priced else answer

        return price

    def _from_catalog(self, query: PriceQuery) -> Price:
        if self._sky_missing:
            return unpriced(self._sky_missing)
        try:
            return self._catalog(query)
        except UserError as exc:  # SkyPilot not installed: say so once per segment row
            self._sky_missing = f"no catalog: {exc.one_line()}"
            return unpriced(self._sky_missing)


def run_costs(ledger, run_ids: list[str] | None = None, since: float | None = None,
              prices: RunPrices | None = None) -> tuple[list[RunCost], list[str]]:
    """RunCost of each named run (all, or those created since ``since``), and one problem
    line per ledger segment that does not parse (it is skipped, not counted)."""
    prices = prices or RunPrices()
    if run_ids:
        runs = [ledger.get_run(r) for r in run_ids]
        if since is not None:
            runs = [r for r in runs if r["created_at"] >= since]
    else:
        runs = ledger.list_runs(since=since)
    out: list[RunCost] = []
    problems: list[str] = []
    for run in runs:
        if run["kind"] == "eval":  # judge tokens, not machine hours: see eval_cost
            from vicuna_ops.cost.eval_cost import eval_run_cost

            out.append(eval_run_cost(run))
            continue
        records: list[SegmentRecord] = []
        for row in ledger.segments(run["run_id"]):
            try:
                records.append(SegmentRecord.model_validate(row["data"]))
            except ValueError as exc:  # pydantic's ValidationError is a ValueError
                first = str(exc).splitlines()[0]
                problems.append(f"{run['run_id']}: segment {row['segment_id']} skipped: "
                                f"corrupt record ({first})")
        table = None
        if run["data"].get("price_table"):
            try:
                table = PriceTable.model_validate(run["data"]["price_table"])
            except ValueError:
                problems.append(f"{run['run_id']}: stored price table is invalid: ignored")
        # provisioning and teardown SkyPilot saw around the attempts are billed too
        records = with_job_times(records, run["data"].get("managed_jobs") or {})
        out.append(run_cost(run["run_id"], records, prices.for_run(table),
                            status=run["status"], recoveries=recoveries(run)))
    return out, problems
