"""Prometheus metrics (`GET /metrics`), with prometheus-client.

Two groups, each in a registry of its own, so that apps and services built side by side (the tests
build several) never share counters:

- `HttpMetrics`, owned by the app: requests and their latency per route template and status,
  open realtime sessions, each API key's usage (read live from the app's `KeyLedger`, by the
  key's name), and the process's own figures (resident memory, CPU, open files).
- `ServiceMetrics`, owned by the loaded services: per-stage latency, audio seconds transcribed and
  synthesised, model load times, and, read live at each scrape, each model's queue (busy and
  waiting calls) and the speaker cache's hits and misses.

The app's registry yields the services' metrics too once the models are loaded, so one scrape
returns everything. Every name starts with `voice_dialogue_`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from backend.app.core.quotas import NO_KEY, OUTCOMES, KeyLedger

if TYPE_CHECKING:
    from backend.app.core.admission import Gate
    from backend.app.core.worker import ModelWorker
    from backend.app.voices.cache import CacheStats

NAMESPACE = "voice_dialogue"

disable_created_metrics()  # type: ignore[no-untyped-call]  # no `_created` series beside every counter

REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
STAGE_BUCKETS = (0.025, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0, 30.0, 60.0)

STAGES = ("stt", "llm_first_token", "llm", "tts_first_audio", "tts", "first_audio")
"""The `stage` label: STT; the LLM to its first token and to the end of the reply; TTS to its first
audio and to the end; and a spoken turn's end of speech (or upload) to the reply's first audio."""

UNMATCHED = "<unmatched>"
"""The `route` label of requests that matched no route (kept apart so scanners add no series)."""


def elapsed_ms(start: float) -> float:
    """Milliseconds since `start` (a `time.perf_counter()` value), to 0.1 ms."""
    return round((time.perf_counter() - start) * 1000, 1)


class HttpMetrics:
    """The app's metrics: requests per route template, method and status; open realtime sessions;
    Wyoming connections and requests."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        labels = ("method", "route", "status")
        self.requests = Counter(
            "http_requests", "HTTP requests and WebSocket sessions, by route template and status",
            labels, namespace=NAMESPACE, registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            "http_request_duration_seconds",
            "Time from a request's arrival to the end of its response (a WebSocket: the session)",
            labels, namespace=NAMESPACE, registry=self.registry, buckets=REQUEST_BUCKETS,
        )  # fmt: skip
        self.sessions = Gauge(
            "realtime_sessions",
            "Open realtime WebSocket sessions",
            namespace=NAMESPACE,
            registry=self.registry,
        )

        self.wyoming_connections = Gauge(
            "wyoming_connections", "Open Wyoming connections", namespace=NAMESPACE, registry=self.registry
        )
        self.wyoming_events = Counter(
            "wyoming_events",
            "Wyoming requests served, by event type and outcome (ok, or the error code sent back)",
            ("type", "outcome"), namespace=NAMESPACE, registry=self.registry,
        )  # fmt: skip

    def observe_wyoming(self, kind: str, outcome: str) -> None:
        self.wyoming_events.labels(kind, outcome).inc()

    def observe_request(self, method: str, route: str | None, status: int, seconds: float) -> None:
        key = (method, route or UNMATCHED, str(status))
        self.requests.labels(*key).inc()
        self.latency.labels(*key).observe(seconds)

    def watch_keys(self, ledger: KeyLedger) -> None:
        """Report each API key's requests, audio and open sessions at every scrape."""
        self.registry.register(_Keys(ledger))

    def include(self, source: Callable[[], CollectorRegistry | None]) -> None:
        """Also yield the metrics of the registry `source()` returns, when it returns one."""
        self.registry.register(_Lazy(source))


class ServiceMetrics:
    """The models' metrics, observed by the services and read live from their workers and cache."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.stages = Histogram(
            "stage_duration_seconds",
            "Time per pipeline stage: stt, llm_first_token, llm, tts_first_audio, tts, and first_audio "
            "(a spoken turn's end of speech, or its upload, to the reply's first audio)",
            ("stage",), namespace=NAMESPACE, registry=self.registry, buckets=STAGE_BUCKETS,
        )  # fmt: skip
        for stage in STAGES:
            self.stages.labels(stage)  # every series exists from the start, at zero
        self.transcribed = Counter(
            "audio_transcribed_seconds",
            "Seconds of audio transcribed",
            namespace=NAMESPACE,
            registry=self.registry,
        )
        self.synthesized = Counter(
            "audio_synthesized_seconds",
            "Seconds of audio synthesised",
            namespace=NAMESPACE,
            registry=self.registry,
        )
        self.load_seconds = Gauge(
            "model_load_seconds", "Time taken to load each model at start-up",
            ("stage", "model"), namespace=NAMESPACE, registry=self.registry,
        )  # fmt: skip

    def observe_stage(self, stage: str, seconds: float) -> None:
        self.stages.labels(stage).observe(seconds)

    def watch(
        self,
        workers: Callable[[], Iterable[ModelWorker]],
        cache: Callable[[], CacheStats],
        gates: Callable[[], Iterable[Gate]] = tuple,
    ) -> None:
        """Report the workers' queues, expected waits and refusals, the gates' refusals and the
        speaker cache at every scrape."""
        self.registry.register(_Live(workers, cache, gates))


class StageTimer:
    """Times a stage that may end early: `first()` marks its first output once, `done()` its end."""

    def __init__(self, metrics: ServiceMetrics, first_stage: str, stage: str) -> None:
        self.metrics = metrics
        self.first_stage = first_stage
        self.stage = stage
        self.started = time.perf_counter()
        self._first_seen = False

    def first(self) -> None:
        if not self._first_seen:
            self._first_seen = True
            self.metrics.observe_stage(self.first_stage, time.perf_counter() - self.started)

    def done(self) -> None:
        self.first()  # an output that came whole: its first part came at its end
        self.metrics.observe_stage(self.stage, time.perf_counter() - self.started)


class _Lazy(Collector):
    """Yields another registry's metrics, if there is one yet."""

    def __init__(self, source: Callable[[], CollectorRegistry | None]) -> None:
        self.source = source

    def collect(self) -> Iterator[Metric]:
        registry = self.source()
        if registry is not None:
            yield from registry.collect()

    def describe(self) -> Iterable[Metric]:
        return ()  # names are only known once the models are loaded; never checked for clashes


class _Live(Collector):
    """Read at each scrape: the workers' queues and the speaker cache."""

    def __init__(
        self,
        workers: Callable[[], Iterable[ModelWorker]],
        cache: Callable[[], CacheStats],
        gates: Callable[[], Iterable[Gate]],
    ) -> None:
        self.workers = workers
        self.cache = cache
        self.gates = gates

    def collect(self) -> Iterator[Metric]:
        busy = GaugeMetricFamily(
            f"{NAMESPACE}_model_busy", "Calls each model is running now (0 or 1)", labels=["model"]
        )
        queued = GaugeMetricFamily(
            f"{NAMESPACE}_model_queue_depth", "Calls admitted and waiting for each model", labels=["model"]
        )
        capacity = GaugeMetricFamily(
            f"{NAMESPACE}_model_capacity",
            "Calls each model admits at once (running + QUEUE_SIZE); more are refused with 503",
            labels=["model"],
        )
        wait = GaugeMetricFamily(
            f"{NAMESPACE}_model_expected_wait_seconds",
            "Seconds a call admitted now would wait for each model (its backlog's expected work)",
            labels=["model"],
        )
        refused = CounterMetricFamily(
            f"{NAMESPACE}_model_refusals",
            "Requests each model refused: its queue full (queue), or their expected wait and work past "
            "their budget (wait, ADMISSION_BUDGETS)",
            labels=["model", "reason"],
        )
        for worker in self.workers():
            running, waiting = worker.load()
            busy.add_metric([worker.name], running)
            queued.add_metric([worker.name], waiting)
            capacity.add_metric([worker.name], worker.capacity)
            wait.add_metric([worker.name], round(worker.expected_wait(), 3))
            for reason, count in worker.refused.items():
                refused.add_metric([worker.name, reason], count)
        for gate in self.gates():
            refused.add_metric([gate.name.replace(" ", "_"), "wait"], gate.refused)
        yield from (busy, queued, capacity, wait, refused)
        stats = self.cache()
        yield CounterMetricFamily(
            f"{NAMESPACE}_speaker_cache_hits", "Prepared reference voices found in the cache", stats.hits
        )
        yield CounterMetricFamily(
            f"{NAMESPACE}_speaker_cache_misses",
            "Reference voices prepared because they were not cached",
            stats.misses,
        )
        yield GaugeMetricFamily(
            f"{NAMESPACE}_speaker_cache_entries", "Prepared voices in the cache", stats.size
        )


class _Keys(Collector):
    """Read at each scrape: each API key's usage, labelled with the key's name (never the key)."""

    def __init__(self, ledger: KeyLedger) -> None:
        self.ledger = ledger

    def collect(self) -> Iterator[Metric]:
        figures, unauthorized = self.ledger.figures()
        requests = CounterMetricFamily(
            f"{NAMESPACE}_key_requests",
            "Requests and WebSocket handshakes by API key name and outcome: ok, or the error code "
            f"they were refused with ({NO_KEY!r}: no valid key)",
            labels=["key", "outcome"],
        )
        audio = CounterMetricFamily(
            f"{NAMESPACE}_key_audio_seconds",
            "Seconds of audio transcribed (stt) and synthesised (tts) by API key name",
            labels=["key", "stage"],
        )
        today = GaugeMetricFamily(
            f"{NAMESPACE}_key_audio_seconds_today",
            "Seconds of audio so far this UTC day by API key name (against audio_seconds_per_day)",
            labels=["key"],
        )
        sessions = GaugeMetricFamily(
            f"{NAMESPACE}_key_realtime_sessions", "Open realtime sessions by API key name", labels=["key"]
        )
        for key in figures:
            for outcome in OUTCOMES:
                if outcome != "unauthorized":
                    requests.add_metric([key.name, outcome], key.outcomes.get(outcome, 0))
            for stage, seconds in key.audio_seconds.items():
                audio.add_metric([key.name, stage], seconds)
            today.add_metric([key.name], key.audio_seconds_today)
            sessions.add_metric([key.name], key.sessions)
        requests.add_metric([NO_KEY, "unauthorized"], unauthorized)
        yield from (requests, audio, today, sessions)
