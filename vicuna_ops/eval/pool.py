"""Run many requests with at most N in flight; the first fatal error stops the rest.

Each job saves its own result as it finishes (see ``store``), so stopping loses only the
requests in flight. A job that raises ``RequestRejected`` is counted and skipped: the next
run tries it again.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Sequence

from vicuna_ops.eval.client import RequestRejected


@dataclass
class PoolResult:
    done: int = 0
    rejected: list[str] = field(default_factory=list)
    fatal: BaseException | None = None


async def run_all(jobs: Sequence[Callable[[], Awaitable[None]]], concurrency: int,
                  names: Sequence[str] | None = None,
                  progress: Callable[[], None] | None = None) -> PoolResult:
    result = PoolResult()
    limit = asyncio.Semaphore(max(1, concurrency))
    stop = asyncio.Event()

    async def one(index: int, job: Callable[[], Awaitable[None]]) -> None:
        async with limit:
            if stop.is_set():
                return
            try:
                await job()
            except RequestRejected as exc:
                name = names[index] if names else str(index)
                result.rejected.append(f"{name}: {exc}")
                return
            except Exception as exc:  # noqa: BLE001 - the first one is re-raised by the caller
                if result.fatal is None:
                    result.fatal = exc
                stop.set()
                return
            result.done += 1
            if progress:
                progress()

    await asyncio.gather(*(one(i, job) for i, job in enumerate(jobs)))
    return result
