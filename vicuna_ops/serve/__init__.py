"""The serving tier: an OpenAI-compatible controller in front of model workers.

    protocol.py    wire formats (OpenAI subset, worker <-> controller messages), ApiError
    bodies.py      body size limits, strict parsing, Bearer checks (controller and worker)
    registry.py    the controller's worker registry, persisted in SQLite (WAL)
    router.py      least-in-flight choice of a worker; leases counted by the controller
    proxy.py       one-hop proxy: retry before the first byte, resume a cut stream after it
    controller.py  the controller app          worker.py      the worker app
    metrics.py     Prometheus metrics          server.py      uvicorn with a drain on SIGTERM
    backends.py    transformers / stub / vLLM  modelfiles.py  --model folder or bucket URI
    membership.py  worker registration, heartbeats, drain
    discovery.py   the controller's address in the bucket
    accounting.py  segment records of serving processes, for `vops cost`
    local.py       `vops serve --local` process supervisor
    node.py        the controller and worker processes' flags and start (no Typer, no Rich)
    client.py      terminal chat client (`vops chat`)
    webpages.py    the chat page (/) and Arena page (/arena), files in static/
    arena.py       Arena battles and votes (arena.db)   arena_routes.py  its API
    arena_report.py  votes -> Bradley-Terry ratings (`vops arena report`)
    skytasks.py    SkyPilot task dicts          deploy.py     `vops serve --clouds` flow

Nothing here is imported by ``vops --help``; fastapi, uvicorn, aiohttp, httpx and torch load
on use.
"""
