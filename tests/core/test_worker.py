from __future__ import annotations

import asyncio
import threading
import time

import pytest

from backend.app.core.errors import OverloadedError
from backend.app.core.worker import ModelWorker


def test_calls_run_off_the_event_loop_one_at_a_time() -> None:
    worker = ModelWorker("test", queue_size=4)
    active, peak = 0, 0
    lock = threading.Lock()
    loop_thread = threading.get_ident()

    def job() -> int:
        nonlocal active, peak
        assert threading.get_ident() != loop_thread
        with lock:
            active += 1
            peak = max(peak, active)
        time.sleep(0.02)
        with lock:
            active -= 1
        return 7

    async def main() -> list[int]:
        return await asyncio.gather(*(worker.run(job) for _ in range(5)))

    assert asyncio.run(main()) == [7] * 5
    assert peak == 1
    worker.shutdown()


def test_a_full_queue_is_refused_with_retry_after() -> None:
    worker = ModelWorker("test", queue_size=1)
    release = threading.Event()

    async def main() -> None:
        first = asyncio.ensure_future(worker.run(release.wait, 5))
        second = asyncio.ensure_future(worker.run(release.wait, 5))
        await asyncio.sleep(0.05)
        assert worker.pending == 2
        with pytest.raises(OverloadedError) as info:
            await worker.run(time.sleep, 0)
        assert info.value.headers["Retry-After"]
        release.set()
        await asyncio.gather(first, second)
        assert worker.pending == 0
        await worker.run(time.sleep, 0)  # admitted again once the queue drains

    asyncio.run(main())
    worker.shutdown()


def test_the_loop_stays_free_while_a_long_call_runs() -> None:
    worker = ModelWorker("test", queue_size=0)

    async def main() -> int:
        ticks = 0
        job = asyncio.ensure_future(worker.run(time.sleep, 0.3))
        while not job.done():
            ticks += 1
            await asyncio.sleep(0.01)
        return ticks

    assert asyncio.run(main()) > 10
    worker.shutdown()


def test_errors_propagate_and_release_the_slot() -> None:
    worker = ModelWorker("test", queue_size=0)

    def boom() -> None:
        raise RuntimeError("bad")

    async def main() -> None:
        with pytest.raises(RuntimeError):
            await worker.run(boom)
        assert worker.pending == 0

    asyncio.run(main())
    worker.shutdown()
