"""The serving tier: an OpenAI-compatible controller in front of model workers.

    protocol.py   wire formats (OpenAI subset, worker <-> controller messages), ApiError
    bodies.py     body size limits, strict parsing, Bearer checks (controller and worker)
    registry.py   the controller's worker registry, persisted in SQLite (WAL)
    router.py     least-in-flight choice of a worker; leases counted by the controller
    proxy.py      one-hop proxy: retry before the first byte, resume a cut stream after it
    controller.py the controller app;  worker.py the worker app
    backends.py   transformers / stub / vLLM generation;  modelfiles.py --model resolution
    membership.py worker registration, heartbeats, drain;  discovery.py controller address
    local.py      `vops serve --local` process supervisor;  client.py terminal chat
    skytasks.py   SkyPilot task dicts for the cloud deployment

Nothing here is imported by ``vops --help``; fastapi, uvicorn, httpx and torch load on use.
"""
