"""The cost model, pure: segment records and a price function in, cost rows out.

A segment costs ``(heartbeat - start) hours x num_nodes x $/h`` of its instance in its zone,
spot or on-demand; a run costs the sum of its segments. Alongside each cost: what the same
hours would have cost on demand (so, what spot saved), and what interruptions wasted:

* work redone: a preempted attempt ran up to step ``s``; the next attempt started from its
  checkpoint at ``first_step`` (and trained ``first_step + 1`` on), so ``s - first_step``
  steps ran twice (``segments.redone_steps``, the definition the trainer writes by). Their
  time is converted with the interrupted attempt's own step rate over its training time,
  and priced at its $/h.
* the gap: from the interrupted attempt's last heartbeat to the next attempt's start, the
  run made no progress and nothing known was billed (SkyPilot was finding capacity).

Each training attempt's billed time splits into start-up (provisioning, setup, downloads,
model build: from the node's start to the first training step, ``train_start``), training,
and redone work (training time the next attempt repeated).

Records are read from buckets written by processes that may retry, so the same segment can
arrive twice (two reads, or an older and a newer version), and a training attempt can leave
two records whose intervals overlap (one per writer). Each is counted once: records of one
segment id, and training records of one attempt on the same machine whose intervals
overlap, merge into the union of their intervals. Serving workers run side by side on
different machines, so only their segment id identifies a duplicate.

A segment with no price is *unpriced*: its cost is None, and so is every total that would
include it (``priced_cost`` keeps the sum of what is known). ``cloud == "local"`` is free by
definition and shown as "local", which is not the same as unpriced.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from vicuna_ops.cost.prices import Price, PriceFn, PriceQuery
from vicuna_ops.segments import SegmentRecord, redone_steps, steps_trained

INTERRUPTED = ("preempted", "failed", "running", "lost")  # "running"/"lost": died silently
MILLION = 1_000_000


@dataclass(frozen=True)
class SegmentCost:
    run_id: str
    segment_id: str
    kind: str
    attempt: int
    status: str
    cloud: str
    region: str | None
    zone: str | None
    instance_type: str | None  # as priced: resolved from accelerators when not recorded
    accelerators: str | None
    spot: bool
    nodes: int
    start: float
    end: float  # last heartbeat
    hours: float
    price_per_hour: float | None  # one node
    ondemand_per_hour: float | None
    price_source: str  # catalog | price-table | local | unpriced
    cost: float | None
    ondemand_cost: float | None
    saving: float | None
    first_step: int | None
    steps: int
    tokens: int
    epoch: float
    redone_steps: int | None = None  # set on an interrupted training attempt
    redone_hours: float | None = None
    redone_cost: float | None = None
    redone_tokens: float = 0.0
    gap_hours: float | None = None
    merged: tuple[str, ...] = ()  # other segment ids counted inside this one
    notes: tuple[str, ...] = ()
    startup_hours: float | None = None  # node start -> first training step; None: unknown
    start_source: str | None = None  # setup | trainer | skypilot: what ``start`` is

    @property
    def lost_hours(self) -> float:
        return (self.redone_hours or 0.0) + (self.gap_hours or 0.0)

    @property
    def training_hours(self) -> float:
        """Billed hours that trained steps the run kept."""
        return max(0.0, self.hours - (self.startup_hours or 0.0) - (self.redone_hours or 0.0))

    @property
    def startup_cost(self) -> float | None:
        return _times(self.price_per_hour, (self.startup_hours or 0.0) * self.nodes)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["merged"], out["notes"] = list(self.merged), list(self.notes)
        out["lost_hours"] = self.lost_hours
        out["training_hours"] = self.training_hours
        out["startup_cost"] = self.startup_cost
        return _rounded(out)


@dataclass(frozen=True)
class RunCost:
    run_id: str
    status: str | None
    segments: tuple[SegmentCost, ...]
    start: float | None
    end: float | None
    node_hours: float
    cost: float | None  # None when any segment is unpriced
    priced_cost: float  # the sum over priced segments: a lower bound when cost is None
    ondemand_cost: float | None
    saving: float | None
    saving_pct: float | None
    unpriced_segments: int
    local_segments: int
    preemptions: int
    recoveries: int | None  # SkyPilot's recovery_count, when the queue was read
    lost_hours: float
    lost_cost: float | None
    train_cost: float | None
    trained_tokens: float  # tokens the model kept: redone work is counted once
    cost_per_1m_trained_tokens: float | None
    epochs: float
    cost_per_epoch: float | None
    serve_cost: float | None
    generated_tokens: int
    cost_per_1m_generated_tokens: float | None
    notes: tuple[str, ...] = field(default=())
    # training attempts' billed node-hours, split (they add up to their node-hours)
    startup_hours: float = 0.0
    training_hours: float = 0.0
    redone_hours: float = 0.0
    startup_cost: float | None = 0.0

    @property
    def wall_hours(self) -> float:
        return 0.0 if self.start is None or self.end is None else (self.end - self.start) / 3600

    def to_dict(self, segments: bool = True) -> dict:
        out = {k: v for k, v in asdict(self).items() if k != "segments"}
        out["notes"] = list(self.notes)
        out["wall_hours"] = self.wall_hours
        out = _rounded(out)
        if segments:
            out["segments"] = [s.to_dict() for s in self.segments]
        return out


@dataclass(frozen=True)
class _Merged:
    record: SegmentRecord
    sources: tuple[str, ...]


def merge_duplicates(records: list[SegmentRecord]) -> tuple[list[_Merged], list[str]]:
    """Each segment once: see the module docstring. Returns the merged records, oldest first,
    and one note per merge."""
    notes: list[str] = []
    by_id: dict[tuple[str, str], _Merged] = {}
    for rec in records:
        key = (rec.run_id, rec.segment_id)
        if key in by_id:
            old = by_id[key].record
            same = old.model_dump() == rec.model_dump()
            notes.append(f"segment {rec.segment_id} read twice: counted once" if same else
                         f"segment {rec.segment_id} has two versions: kept their union")
            by_id[key] = _Merged(_union(old, rec), by_id[key].sources)
        else:
            by_id[key] = _Merged(rec, (rec.segment_id,))

    merged: list[_Merged] = []
    groups: dict[tuple, list[_Merged]] = {}
    for item in sorted(by_id.values(), key=lambda m: (m.record.start, m.record.segment_id)):
        rec = item.record
        if rec.kind != "train":
            merged.append(item)
            continue
        groups.setdefault((rec.run_id, rec.attempt, rec.cloud, rec.zone, rec.instance_type,
                           rec.accelerators, rec.use_spot), []).append(item)
    for items in groups.values():
        current = items[0]
        for item in items[1:]:
            if item.record.start <= current.record.heartbeat:  # overlap: the same machines
                notes.append(f"segments {', '.join(current.sources)} and "
                             f"{item.record.segment_id} overlap on attempt "
                             f"{item.record.attempt}: counted once")
                current = _Merged(_union(current.record, item.record),
                                  current.sources + item.sources)
            else:
                merged.append(current)
                current = item
        merged.append(current)
    merged.sort(key=lambda m: (m.record.start, m.record.segment_id))
    return merged, notes


def _union(a: SegmentRecord, b: SegmentRecord) -> SegmentRecord:
    """Two records of the same work: the newer one's state over the union of both intervals."""
    newer = a if a.heartbeat >= b.heartbeat else b
    firsts = [s for s in (a.first_step, b.first_step) if s is not None]
    trains = [t for t in (a.train_start, b.train_start) if t is not None]
    return newer.model_copy(update={
        "start": min(a.start, b.start), "heartbeat": newer.heartbeat,
        "start_source": (a if a.start <= b.start else b).start_source,
        "train_start": min(trains) if trains else None,
        "first_step": min(firsts) if firsts else None, "steps": max(a.steps, b.steps),
        "tokens": max(a.tokens, b.tokens), "epoch": max(a.epoch, b.epoch),
        "num_nodes": max(a.num_nodes, b.num_nodes),
    })


def segment_costs(records: list[SegmentRecord], prices: PriceFn
                  ) -> tuple[list[SegmentCost], list[str]]:
    """Per-segment rows, oldest first, with the interruption losses on the interrupted
    training attempts; and the notes (merges, odd records)."""
    merged, notes = merge_duplicates(records)
    rows = [_price_segment(m, prices) for m in merged]
    train = [i for i, row in enumerate(rows) if row.kind == "train"]
    for this, following in zip(train, train[1:]):
        rows[this] = _with_interruption_loss(rows[this], rows[following])
    return rows, notes


def _price_segment(item: _Merged, prices: PriceFn) -> SegmentCost:
    rec = item.record
    notes: list[str] = []
    if rec.heartbeat < rec.start:
        notes.append("heartbeat before start: counted as 0 hours")
    if rec.cloud == "local":
        price = ondemand = Price(0.0, rec.instance_type, "local")
    else:
        price = prices(PriceQuery.of(rec))
        ondemand = price if not rec.use_spot else prices(PriceQuery.of(rec, spot=False))
    if price.note:
        notes.append(price.note)
    if rec.use_spot and not ondemand.priced and price.priced:
        notes.append(f"on-demand: {ondemand.note}")
    hours = rec.hours
    cost = _times(price.per_hour, hours * rec.num_nodes)
    ondemand_cost = _times(ondemand.per_hour, hours * rec.num_nodes)
    return SegmentCost(
        run_id=rec.run_id, segment_id=rec.segment_id, kind=rec.kind, attempt=rec.attempt,
        status=rec.status, cloud=rec.cloud, region=rec.region, zone=rec.zone,
        instance_type=price.instance_type or rec.instance_type, accelerators=rec.accelerators,
        spot=rec.use_spot, nodes=rec.num_nodes, start=rec.start, end=rec.heartbeat,
        hours=hours, price_per_hour=price.per_hour, ondemand_per_hour=ondemand.per_hour,
        price_source=price.source, cost=cost, ondemand_cost=ondemand_cost,
        saving=None if cost is None or ondemand_cost is None else ondemand_cost - cost,
        first_step=rec.first_step, steps=rec.steps, tokens=rec.tokens, epoch=rec.epoch,
        merged=item.sources[1:], notes=tuple(notes), startup_hours=_startup_hours(rec),
        start_source=rec.start_source)


def _startup_hours(rec: SegmentRecord) -> float | None:
    """From the node's start to the first training step; all of it for an attempt that
    never trained; None for records that do not say (written before train_start existed)."""
    if rec.kind != "train":
        return None
    if rec.train_start is not None:
        return min(rec.hours, max(0.0, rec.train_start - rec.start) / 3600)
    if steps_trained(rec) == 0 and rec.tokens == 0 and rec.status != "running":
        return rec.hours
    return None


def _with_interruption_loss(row: SegmentCost, following: SegmentCost) -> SegmentCost:
    if row.status not in INTERRUPTED:
        return row
    gap = max(0.0, following.start - row.end) / 3600
    redone_hours = redone_cost = None
    redone_tokens = 0.0
    steps_run = steps_trained(_steps_of(row))
    redone = redone_steps(_steps_of(row), _steps_of(following))
    if redone is not None and steps_run is not None:
        if steps_run > 0:
            # at the attempt's own step rate: its training time, start-up left out
            trained_hours = max(0.0, row.hours - (row.startup_hours or 0.0))
            redone_hours = redone * trained_hours / steps_run
            redone_tokens = min(float(row.tokens), row.tokens * redone / steps_run)
        else:
            redone, redone_hours = 0, 0.0
        redone_cost = _times(row.price_per_hour, redone_hours * row.nodes)
    return replace(row, redone_steps=redone, redone_hours=redone_hours,
                    redone_cost=redone_cost, redone_tokens=redone_tokens, gap_hours=gap)


def _steps_of(row: SegmentCost) -> SegmentRecord:
    """The step fields of a priced row, as the record the shared step rules read."""
    return SegmentRecord(run_id=row.run_id, segment_id=row.segment_id, start=row.start,
                         heartbeat=row.end, first_step=row.first_step, steps=row.steps)


def run_cost(run_id: str, records: list[SegmentRecord], prices: PriceFn, *,
             status: str | None = None, recoveries: int | None = None) -> RunCost:
    """Totals of one run (see RunCost). ``status`` is the ledger's; a run whose last training
    attempt stopped at its budget shows as budget-stopped whatever the ledger says."""
    rows, notes = segment_costs(records, prices)
    train = [r for r in rows if r.kind == "train"]
    serve = [r for r in rows if r.kind != "train"]
    if train and train[-1].status == "budget-stopped":
        status = "budget-stopped"
    cost = _sum_or_none(r.cost for r in rows)
    ondemand = _sum_or_none(r.ondemand_cost for r in rows)
    saving = None if cost is None or ondemand is None else ondemand - cost
    train_cost = _sum_or_none(r.cost for r in train) if train else None
    serve_cost = _sum_or_none(r.cost for r in serve) if serve else None
    trained = max(0.0, sum(r.tokens for r in train) - sum(r.redone_tokens for r in train))
    epochs = max((r.epoch for r in train), default=0.0)
    generated = sum(r.tokens for r in serve if r.kind == "serve-worker")
    lost_costs = [r.redone_cost for r in train if r.redone_steps]
    return RunCost(
        run_id=run_id, status=status, segments=tuple(rows),
        start=min((r.start for r in rows), default=None),
        end=max((r.end for r in rows), default=None),
        node_hours=sum(r.hours * r.nodes for r in rows),
        cost=cost, priced_cost=sum(r.cost for r in rows if r.cost is not None),
        ondemand_cost=ondemand, saving=saving,
        saving_pct=100 * saving / ondemand if saving is not None and ondemand else None,
        unpriced_segments=sum(r.cost is None for r in rows),
        local_segments=sum(r.price_source == "local" for r in rows),
        preemptions=sum(r.status == "preempted" for r in rows), recoveries=recoveries,
        lost_hours=sum(r.lost_hours for r in train),
        lost_cost=_sum_or_none(lost_costs) if lost_costs else 0.0,
        train_cost=train_cost, trained_tokens=trained,
        cost_per_1m_trained_tokens=_per(train_cost, trained, MILLION),
        epochs=epochs, cost_per_epoch=_per(train_cost, epochs, 1),
        serve_cost=serve_cost, generated_tokens=generated,
        cost_per_1m_generated_tokens=_per(serve_cost, generated, MILLION),
        notes=tuple(notes),
        startup_hours=sum((r.startup_hours or 0.0) * r.nodes for r in train),
        training_hours=sum(r.training_hours * r.nodes for r in train),
        redone_hours=sum((r.redone_hours or 0.0) * r.nodes for r in train),
        startup_cost=_sum_or_none(r.startup_cost for r in train) if train else 0.0)


@dataclass(frozen=True)
class CostPoint:
    t: float
    cost: float  # cumulative, priced segments only
    ondemand: float  # cumulative on-demand cost of the same hours


def cumulative_cost(rows: list[SegmentCost] | tuple[SegmentCost, ...]) -> list[CostPoint]:
    """Cumulative cost over time: piecewise linear, with a point at every segment boundary
    (segments may run side by side, as serving workers do). Unpriced segments add nothing.
    A sweep over the boundaries: each segment spends at a constant rate between them."""
    changes: dict[float, list[float]] = {}  # t -> [rate change, od rate change, jump, od jump]
    for r in rows:
        cost, ondemand = r.cost or 0.0, r.ondemand_cost or 0.0
        if r.end > r.start:
            span = r.end - r.start
            _add(changes, r.start, cost / span, ondemand / span, 0.0, 0.0)
            _add(changes, r.end, -cost / span, -ondemand / span, 0.0, 0.0)
        else:  # no duration: all of it at once
            _add(changes, r.start, 0.0, 0.0, cost, ondemand)
    points: list[CostPoint] = []
    total = total_od = rate = rate_od = 0.0
    previous: float | None = None
    for t in sorted(changes):
        if previous is not None:
            total += rate * (t - previous)
            total_od += rate_od * (t - previous)
        d_rate, d_rate_od, jump, jump_od = changes[t]
        total, total_od = total + jump, total_od + jump_od
        rate, rate_od = rate + d_rate, rate_od + d_rate_od
        points.append(CostPoint(t, total, total_od))
        previous = t
    return points


def _add(changes: dict[float, list[float]], t: float, *deltas: float) -> None:
    entry = changes.setdefault(t, [0.0, 0.0, 0.0, 0.0])
    for i, delta in enumerate(deltas):
        entry[i] += delta


def cost_at(points: list[CostPoint], t: float) -> float:
    """Cumulative cost at time t, interpolated between the points."""
    for before, after in zip(points, points[1:]):
        if before.t <= t <= after.t:
            span = after.t - before.t
            return before.cost + (after.cost - before.cost) * ((t - before.t) / span if span else 1)
    return points[-1].cost if points and t >= points[-1].t else 0.0


def _times(per_hour: float | None, node_hours: float | None) -> float | None:
    return None if per_hour is None or node_hours is None else per_hour * node_hours


def _sum_or_none(values) -> float | None:
    total = 0.0
    for value in values:
        if value is None:
            return None
        total += value
    return total


def _per(cost: float | None, amount: float, unit: float) -> float | None:
    return None if cost is None or amount <= 0 else cost * unit / amount


def _rounded(data: dict) -> dict:
    return {k: round(v, 6) if isinstance(v, float) else v for k, v in data.items()}
