"""Cheapest-first against expected-cost ordering of spot zones, on simulated preemptions.

A trace-driven simulation of one managed spot job that needs ``--work`` useful hours (12 by
default, a Vicuna-7B-sized run), run ``--seeds`` times for each ordering on the same seeded
preemption traces. The ordering under test is vops' own code: ``vicuna_ops.launch.ordering``
(the ``expected`` rank key with rates estimated from a simulated history, smoothed as in
``vops train``) against plain cheapest-first.

The model (parameters documented here, all flags):

* Zones: the 8 cheapest A100:8 spot zones of the offline catalog subset (aws p4d, gcp a2),
  each with a preemption rate per hour of running. Cheap zones are contested: the rates fall
  with the price (``ZONES`` below; 1.0/h for the cheapest, 0.03/h for the dearest), the
  shape spot advisors and SkyPilot's own Vicuna runs report (the cheapest A100 zones preempted
  several times a day).
* Preemptions: a Poisson process per zone while a node runs there (exponential times).
* After a preemption the zone has no spot capacity for an exponential time, mean
  ``--outage-h`` (1 h). A launch into a zone without capacity fails after ``--probe-h``
  (3 min, not billed) and SkyPilot's FAILOVER moves down the ordered list; a relaunch starts
  from the top of the list (what SkyPilot 0.14.1 does, see the README). When every zone is
  out, the job waits for the first to come back.
* Every (re)start bills ``--restart-h`` (15 min: provisioning, setup, model download) before
  training resumes from the last checkpoint; a checkpoint every ``--checkpoint-h`` (30 min) of
  training; a preemption loses the work since the last one.
* The expected ordering knows each zone's rate only through a history: ``--history-h`` hours
  of observed running per zone (Poisson counts), smoothed towards the prior exactly as
  ``vops train --order expected`` does.

Prints mean and 90th-percentile dollars and hours to finish for both orderings, and the ratio
expected / cheapest-first (< 1: expected ordering is cheaper / faster); then the ratios over a
sweep of the cheapest zone's preemption rate (``--sweep``).

    python bench/spot_sim.py [--seeds 2000] [--work 12]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vicuna_ops.launch.candidates import Candidate  # noqa: E402
from vicuna_ops.launch.ordering import ZoneHistory, rank_key  # noqa: E402

# (cloud, zone, spot $/h for the node, true preemptions per hour of running)
ZONES = [
    ("aws", "us-east-1d", 2.4655, 1.00),
    ("aws", "ca-central-1b", 4.5467, 0.40),
    ("aws", "us-east-2a", 6.0374, 0.20),
    ("aws", "us-east-2b", 6.0960, 0.20),
    ("aws", "eu-north-1c", 6.1688, 0.15),
    ("aws", "ap-northeast-1a", 7.5185, 0.08),
    ("gcp", "me-west1-a", 11.1520, 0.03),
    ("gcp", "me-west1-c", 11.1520, 0.03),
]


@dataclass(frozen=True)
class Params:
    work_h: float
    checkpoint_h: float
    restart_h: float
    outage_h: float
    probe_h: float
    history_h: float
    rates: dict  # zone -> preemptions/h overriding ZONES (the sweep)


@dataclass
class Outcome:
    dollars: float
    hours: float
    preemptions: int


def candidates() -> list[Candidate]:
    return [Candidate(cloud, zone.rsplit("-", 1)[0], zone, "sim", price, None)
            for cloud, zone, price, _ in ZONES]


def by_price() -> list[Candidate]:
    return sorted(candidates(), key=lambda c: (c.spot_price, c.zone))


def by_expected(params: Params, rng: random.Random) -> list[Candidate]:
    """vops' expected order, with rates learnt from a simulated history."""
    history = {}
    for cloud, zone, _, rate in ZONES:
        rate = params.rates.get(zone, rate)
        observed = _poisson(rng, rate * params.history_h)
        history[(cloud, zone)] = ZoneHistory(params.history_h, observed)
    return sorted(candidates(), key=rank_key(history, params.checkpoint_h, params.restart_h))


def simulate(order: list[Candidate], params: Params, rng: random.Random) -> Outcome:
    rates = {zone: rate for _, zone, _, rate in ZONES}
    rates.update(params.rates)
    out_until = {c.zone: 0.0 for c in order}
    clock = dollars = 0.0
    remaining = params.work_h
    preemptions = 0
    while True:
        zone = None
        while zone is None:  # SkyPilot FAILOVER: from the top of the list every time
            for cand in order:
                if out_until[cand.zone] <= clock:
                    zone = cand
                    break
                clock += params.probe_h  # a launch that finds no capacity
            if zone is None:
                clock = max(clock, min(out_until.values()))
        life = rng.expovariate(rates[zone.zone])  # hours until this node is preempted
        needed = params.restart_h + remaining
        if life >= needed:
            return Outcome(dollars + needed * zone.spot_price, clock + needed, preemptions)
        preemptions += 1
        dollars += life * zone.spot_price
        clock += life
        trained = max(0.0, life - params.restart_h)
        remaining -= (trained // params.checkpoint_h) * params.checkpoint_h  # kept work
        out_until[zone.zone] = clock + rng.expovariate(1 / params.outage_h)


def _poisson(rng: random.Random, mean: float) -> int:
    count, total = 0, rng.expovariate(1.0)
    while total < mean:
        count += 1
        total += rng.expovariate(1.0)
    return count


def summarize(name: str, outcomes: list[Outcome], verbose: bool = True
              ) -> tuple[float, float]:
    dollars = [o.dollars for o in outcomes]
    hours = [o.hours for o in outcomes]
    p90 = lambda xs: statistics.quantiles(xs, n=10)[-1]  # noqa: E731
    if verbose:
            print(f"{name:15s} ${statistics.mean(dollars):8.2f} (p90 ${p90(dollars):8.2f})   "
              f"{statistics.mean(hours):6.2f} h (p90 {p90(hours):6.2f} h)   "
              f"{statistics.mean(o.preemptions for o in outcomes):5.2f} preemptions")
    return statistics.mean(dollars), statistics.mean(hours)


def compare(params: Params, seeds: int, verbose: bool) -> tuple[float, float]:
    cheapest, expected = [], []
    first_expected = None
    for seed in range(seeds):
        order = by_expected(params, random.Random(10_000 + seed))
        first_expected = first_expected or order[0].zone
        # the same preemption trace seed for both orderings
        cheapest.append(simulate(by_price(), params, random.Random(seed)))
        expected.append(simulate(order, params, random.Random(seed)))
    if verbose:
        print(f"cheapest-first tries {by_price()[0].zone} first; expected-cost (seed 0) "
              f"tries {first_expected} first")
    price_usd, price_h = summarize("cheapest-first", cheapest, verbose)
    exp_usd, exp_h = summarize("expected-cost", expected, verbose)
    return exp_usd / price_usd, exp_h / price_h


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=2000)
    parser.add_argument("--work", type=float, default=12.0, help="useful hours the job needs")
    parser.add_argument("--checkpoint-h", type=float, default=0.5)
    parser.add_argument("--restart-h", type=float, default=0.25)
    parser.add_argument("--outage-h", type=float, default=1.0)
    parser.add_argument("--probe-h", type=float, default=0.05)
    parser.add_argument("--history-h", type=float, default=50.0)
    parser.add_argument("--sweep", default="0.5,1,2,4,8",
                        help="preemption rates per hour for the cheapest zone to compare at")
    args = parser.parse_args(argv)
    params = Params(args.work, args.checkpoint_h, args.restart_h, args.outage_h,
                    args.probe_h, args.history_h, {})
    print(f"{args.seeds} seeded runs of a {args.work:g}-hour job; checkpoint every "
          f"{args.checkpoint_h:g} h, restart {args.restart_h:g} h, outage after a preemption "
          f"{args.outage_h:g} h, history {args.history_h:g} h per zone")
    dollars, hours = compare(params, args.seeds, verbose=True)
    print(f"expected / cheapest-first: dollars {dollars:.3f}, hours {hours:.3f}")
    cheapest_zone = by_price()[0].zone
    print(f"\nsweep over {cheapest_zone}'s preemption rate (the other zones as above):")
    print("rate/h  dollars ratio  hours ratio")
    for text in args.sweep.split(","):
        swept = Params(**{**params.__dict__, "rates": {cheapest_zone: float(text)}})
        dollars, hours = compare(swept, args.seeds, verbose=False)
        print(f"{float(text):6g}  {dollars:13.3f}  {hours:11.3f}")


if __name__ == "__main__":
    main()
