"""An eval run's cost (``vops eval judge --judge-price``): judge tokens x the given prices.

The ledger run (kind "eval") carries its token totals and prices in its data; it becomes a
RunCost with one row, "judge", priced by token, not by the hour (0 node hours).
"""

from __future__ import annotations

from vicuna_ops.cost.model import RunCost, SegmentCost


def eval_run_cost(run: dict) -> RunCost:
    data = run.get("data") or {}
    cost = data.get("cost_usd")
    cost = float(cost) if isinstance(cost, (int, float)) else None
    start = float(data.get("first_judged") or run.get("created_at") or 0.0)
    end = max(start, float(data.get("last_judged") or run.get("updated_at") or start))
    note = (f"{data.get('judgments', 0)} judgments: {data.get('input_tokens', 0):,} input + "
            f"{data.get('output_tokens', 0):,} output tokens at "
            f"${data.get('price_in_per_1m', 0):g} / ${data.get('price_out_per_1m', 0):g} per 1M")
    row = SegmentCost(
        run_id=run["run_id"], segment_id="judge", kind="eval-judge", attempt=1,
        status=run.get("status") or "finished", cloud="api", region=None,
        zone=data.get("judge_model"), instance_type=None, accelerators=None, spot=False,
        nodes=1, start=start, end=end, hours=0.0, price_per_hour=None,
        ondemand_per_hour=None, price_source="tokens" if cost is not None else "unpriced",
        cost=cost, ondemand_cost=cost, saving=None if cost is None else 0.0,
        first_step=None, steps=0, tokens=0, epoch=0.0, notes=(note,))
    return RunCost(
        run_id=run["run_id"], status=run.get("status"), segments=(row,), start=start, end=end,
        node_hours=0.0, cost=cost, priced_cost=cost or 0.0, ondemand_cost=cost,
        saving=None if cost is None else 0.0, saving_pct=None,
        unpriced_segments=int(cost is None), local_segments=0, preemptions=0, recoveries=None,
        lost_hours=0.0, lost_cost=0.0, train_cost=None, trained_tokens=0.0,
        cost_per_1m_trained_tokens=None, epochs=0.0, cost_per_epoch=None, serve_cost=None,
        generated_tokens=0, cost_per_1m_generated_tokens=None,
        notes=(f"LLM judge {data.get('judge_model')} on {data.get('eval_dir')}",))
