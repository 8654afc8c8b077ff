from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import aclosing

import pytest

from backend.app.core.cancellation import raise_if_cancelled
from backend.app.core.errors import OverloadedError, StageTimeoutError
from backend.app.core.worker import ModelWorker, stage_times
from tests.overlap import Overlap


def test_calls_run_off_the_event_loop_one_at_a_time() -> None:
    worker = ModelWorker("test", queue_size=4)
    overlap = Overlap()
    loop_thread = threading.get_ident()

    def job() -> int:
        assert threading.get_ident() != loop_thread
        with overlap.inside(0.02):
            return 7

    async def main() -> list[int]:
        return await asyncio.gather(*(worker.run(job) for _ in range(5)))

    assert asyncio.run(main()) == [7] * 5
    assert overlap.most == 1
    worker.shutdown()


def test_a_worker_for_replicas_runs_that_many_calls_at_once_and_admits_the_queue_besides() -> None:
    worker = ModelWorker("test", queue_size=1, concurrency=3)
    assert worker.capacity == 4
    release = threading.Event()
    running = 0
    lock = threading.Lock()

    def job() -> None:
        nonlocal running
        with lock:
            running += 1
        release.wait(5)

    async def main() -> None:
        calls = [asyncio.ensure_future(worker.run(job)) for _ in range(4)]
        await asyncio.sleep(0.1)
        assert running == 3 and worker.load() == (3, 1)
        with pytest.raises(OverloadedError):
            await worker.run(time.sleep, 0)
        release.set()
        await asyncio.gather(*calls)

    asyncio.run(main())
    worker.shutdown()
    with pytest.raises(ValueError):
        ModelWorker("test", queue_size=1, concurrency=0)


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


def test_stream_yields_items_as_they_are_made_on_the_worker_thread() -> None:
    worker = ModelWorker("test", queue_size=1)
    loop_thread = threading.get_ident()
    threads: set[int] = set()

    def count(n: int) -> Iterator[int]:
        for i in range(n):
            threads.add(threading.get_ident())
            yield i

    async def main() -> list[int]:
        return [i async for i in worker.stream(count, 5)]

    assert asyncio.run(main()) == [0, 1, 2, 3, 4]
    assert len(threads) == 1 and loop_thread not in threads
    assert worker.pending == 0
    worker.shutdown()


def test_stopping_a_stream_early_closes_the_generator_on_its_thread() -> None:
    worker = ModelWorker("test", queue_size=1)
    produced: list[int] = []
    closed = threading.Event()

    def endless() -> Iterator[int]:
        try:
            i = 0
            while True:
                produced.append(i)
                yield i
                i += 1
                time.sleep(0.01)
        finally:
            closed.set()

    async def main() -> None:
        async with aclosing(worker.stream(endless)) as items:
            async for i in items:
                if i == 2:
                    break

    asyncio.run(main())
    assert closed.wait(2), "the generator's finally did not run"
    assert len(produced) <= 4  # stopped after the item in flight, not run on
    deadline = time.monotonic() + 2
    while worker.pending and time.monotonic() < deadline:
        time.sleep(0.01)
    assert worker.pending == 0
    worker.shutdown()


def test_stream_errors_reach_the_consumer() -> None:
    worker = ModelWorker("test", queue_size=1)

    def failing() -> Iterator[int]:
        yield 1
        raise ValueError("model broke")

    def not_even_started() -> Iterator[int]:
        raise RuntimeError("could not start")

    async def collect(fn: Callable[[], Iterator[int]]) -> list[int]:
        return [i async for i in worker.stream(fn)]

    with pytest.raises(ValueError, match="model broke"):
        asyncio.run(collect(failing))
    with pytest.raises(RuntimeError, match="could not start"):
        asyncio.run(collect(not_even_started))
    worker.shutdown()


def test_follow_up_work_is_never_refused() -> None:
    worker = ModelWorker("test", queue_size=0)
    release = threading.Event()

    async def main() -> list[int]:
        first = asyncio.ensure_future(worker.run(release.wait))
        await asyncio.sleep(0.05)
        with pytest.raises(OverloadedError):
            worker.check()
        follow = asyncio.ensure_future(worker.follow_up(lambda: 3))
        release.set()
        await first
        return [await follow]

    assert asyncio.run(main()) == [3]
    worker.shutdown()


def _cancellable_loop(steps: list[int], stopped: threading.Event) -> None:
    """A long call that checks for cancellation between units, as the backends do."""
    try:
        for i in range(1000):
            raise_if_cancelled()
            steps.append(i)
            time.sleep(0.01)
    finally:
        stopped.set()


def test_a_call_past_its_timeout_is_a_504_and_stops_running() -> None:
    worker = ModelWorker("tts", queue_size=1, timeout_s=0.2)
    steps: list[int] = []
    stopped = threading.Event()
    with pytest.raises(StageTimeoutError) as timed_out:
        asyncio.run(worker.run(_cancellable_loop, steps, stopped))
    assert timed_out.value.status_code == 504 and "tts" in timed_out.value.message
    assert stopped.wait(1.0)  # stopped at the next unit, long before its 10 s
    assert len(steps) < 100
    time.sleep(0.05)
    assert worker.pending == 0
    worker.shutdown()


def test_cancelling_the_caller_stops_running_work_and_drops_queued_work() -> None:
    worker = ModelWorker("stt", queue_size=2)
    first_steps: list[int] = []
    first_stopped = threading.Event()
    second_ran = threading.Event()

    async def main() -> None:
        running = asyncio.create_task(worker.run(_cancellable_loop, first_steps, first_stopped))
        queued = asyncio.create_task(worker.run(second_ran.set))
        await asyncio.sleep(0.1)
        assert worker.pending == 2
        running.cancel()
        queued.cancel()
        await asyncio.gather(running, queued, return_exceptions=True)

    asyncio.run(main())
    assert first_stopped.wait(1.0) and len(first_steps) < 100
    time.sleep(0.05)
    assert worker.pending == 0 and not second_ran.is_set()
    worker.shutdown()


def test_a_stream_past_its_timeout_is_a_504() -> None:
    worker = ModelWorker("chat", queue_size=1, timeout_s=0.2)

    def slow() -> Iterator[int]:
        for i in range(100):
            time.sleep(0.05)
            yield i

    async def main() -> list[int]:
        seen = []
        async with aclosing(worker.stream(slow)) as items:
            async for item in items:
                seen.append(item)
        return seen

    with pytest.raises(StageTimeoutError):
        asyncio.run(main())
    time.sleep(0.2)
    assert worker.pending == 0
    worker.shutdown()


def test_time_spent_per_stage_is_recorded_for_the_request() -> None:
    worker = ModelWorker("stt", queue_size=1)

    async def main() -> dict[str, float]:
        timings: dict[str, float] = {}
        stage_times.set(timings)
        await worker.run(time.sleep, 0.05)
        await worker.run(time.sleep, 0.05)
        return timings

    timings = asyncio.run(main())
    assert set(timings) == {"stt"} and 90 <= timings["stt"] < 1000
    worker.shutdown()


def test_an_admission_keeps_its_slot_for_the_stream_it_starts_later() -> None:
    worker = ModelWorker("test", queue_size=0)

    async def main() -> list[int]:
        admission = worker.admit()
        assert worker.pending == 1
        with pytest.raises(OverloadedError):
            worker.admit()
        with pytest.raises(OverloadedError):
            await worker.run(time.sleep, 0)
        items = [i async for i in admission.stream(lambda: iter(range(3)))]
        with pytest.raises(RuntimeError, match="already used"):
            await admission.run(time.sleep, 0)
        return items

    assert asyncio.run(main()) == [0, 1, 2]
    assert worker.pending == 0
    worker.shutdown()


def test_the_slot_is_free_as_soon_as_a_stream_has_ended() -> None:
    """The next request right after a stream's last item is admitted (it raced the slot's release)."""
    worker = ModelWorker("test", queue_size=0)

    async def main() -> None:
        for _ in range(300):
            items = [i async for i in worker.stream(lambda: iter(range(2)))]
            assert items == [0, 1]
            assert worker.pending == 0
            worker.admit().release()

    asyncio.run(main())
    worker.shutdown()


def test_an_unused_admission_gives_its_slot_back() -> None:
    worker = ModelWorker("test", queue_size=0)
    admission = worker.admit()
    admission.release()
    admission.release()  # idempotent
    assert worker.pending == 0
    admission = worker.admit()
    del admission  # dropped: a response that never started
    assert worker.pending == 0
    stream = worker.admit().stream(lambda: iter(range(3)))
    assert worker.pending == 1
    del stream  # never iterated
    assert worker.pending == 0
    assert asyncio.run(worker.admit().run(lambda: 5)) == 5
    assert worker.pending == 0
    worker.shutdown()
