"""What runs cost: catalog prices, the cost model, the ledger sync, reports, plots, the budget
guard.

    prices       PriceQuery/Price and SkyPilot's catalog as a price function (needs sky)
    price_table  the run's price table (``<bucket>/<run-id>/prices.json``): prices a node can
                 use without SkyPilot
    model        pure: segment records + a price function -> per-segment and per-run costs
    budget       ``cost_so_far(records, prices)`` for the training runtime's --max-cost guard
    sync         bucket segment records + SkyPilot's managed-jobs queue -> the ledger
    report       cost rows -> Rich tables, JSON, CSV
    plot         cumulative cost over time -> PNG or self-contained HTML

Nothing here imports SkyPilot at import time: a training node has none.
"""
