"""Prometheus metrics: what an operator of a fleet scrapes (`GET /metrics` on the admin
listener), in the text format through prometheus-client.

Labels stay bounded: route families, HTTP statuses, states, outcomes and kinds, never a
guest's MAC or address. Counters and histograms are observed where things happen (the
guest app's timing middleware, the registry's change feed, the ISO flow); gauges that
mirror a part's own state (guests by state, DHCP, the guard's drops, the store) are read
from that part at scrape time. Each server has its own CollectorRegistry, so two
services in one process (tests) do not mix.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from metadata_server.model import State
from metadata_server.store.base import Change, ChangeEvent

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Guest requests answer from memory: most in well under a millisecond, a boot storm in a
# few; long-polls (wait_for_change) are their own family.
REQUEST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
BOOT_BUCKETS = (0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 45, 60, 90, 120, 300, 600)
FLOW_BUCKETS = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600)


def route_family(path: str) -> str:
    """The bounded label of a guest request's path."""
    trimmed = path.lstrip("/")
    head = trimmed.split("/", 1)[0]
    if head == "v1":
        return "v1"
    if head in ("openstack", "nocloud", "healthz"):
        return head
    if trimmed.endswith("api/token"):
        return "token"
    return "ec2"


@dataclass
class Readings:
    """Where the scrape-time gauges come from: each a function of the part that knows
    (None: that part does not run on this server)."""

    states: Callable[[], dict[str, int]] | None = None
    dhcp: Callable[[], dict[str, int]] | None = None
    guard: Callable[[], dict[str, int]] | None = None
    store_healthy: Callable[[], bool] | None = None
    feed_lag: Callable[[], float | None] | None = None
    connection_refusals: Callable[[], dict[str, int]] | None = None
    extra: list[Callable[[], Iterable[Metric]]] = field(default_factory=list)


class _ReadingsCollector(Collector):
    def __init__(self, readings: Readings) -> None:
        self.readings = readings

    def collect(self) -> Iterable[Metric]:
        r = self.readings
        if r.states is not None:
            gauge = GaugeMetricFamily(
                "metadata_guests", "Guests served here, by state", labels=["state"]
            )
            counts = r.states()
            for state in State:
                gauge.add_metric([state.value], counts.get(state.value, 0))
            yield gauge
        if r.dhcp is not None:
            dhcp = r.dhcp()
            for name, help_text in (
                ("renders", "DHCP configurations rendered"),
                ("refusals", "DHCP configurations the daemon's checker refused"),
                ("reloads", "DHCP daemon reloads"),
                ("left_out", "guests left out of the DHCP configuration (now)"),
            ):
                family = CounterMetricFamily if name != "left_out" else GaugeMetricFamily
                yield family(f"metadata_dhcp_{name}", help_text, value=dhcp.get(name, 0))
        if r.guard is not None:
            drops = CounterMetricFamily(
                "metadata_guard_drops", "Frames the bridge guard dropped, by kind", labels=["kind"]
            )
            for kind, packets in sorted(r.guard().items()):
                drops.add_metric([kind], packets)
            yield drops
        if r.connection_refusals is not None:
            refusals = CounterMetricFamily(
                "metadata_guest_connections_refused",
                "Guest connections refused before parsing, by reason",
                labels=["reason"],
            )
            for reason, count in sorted(r.connection_refusals().items()):
                refusals.add_metric([reason], count)
            yield refusals
        if r.store_healthy is not None:
            yield GaugeMetricFamily(
                "metadata_store_healthy",
                "1 while the registry database answers, 0 during an outage",
                value=1 if r.store_healthy() else 0,
            )
        if r.feed_lag is not None:
            lag = r.feed_lag()
            if lag is not None:
                yield GaugeMetricFamily(
                    "metadata_change_feed_lag_seconds",
                    "How far behind other servers' changes this one is (PostgreSQL)",
                    value=lag,
                )
        for extra in r.extra:
            yield from extra()


class Metrics:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.registry = CollectorRegistry()
        self._clock = clock
        self.readings = Readings()
        self.registry.register(_ReadingsCollector(self.readings))
        self.requests = Counter(
            "metadata_guest_requests",
            "Guest API requests, by route family and status",
            ["family", "status"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "metadata_guest_request_seconds",
            "Time to answer a guest request, by route family",
            ["family"],
            buckets=REQUEST_BUCKETS,
            registry=self.registry,
        )
        self.to_configured = Histogram(
            "metadata_time_to_configured_seconds",
            "From registered (or leased) to configured, per guest boot",
            ["since"],
            buckets=BOOT_BUCKETS,
            registry=self.registry,
        )
        self.iso_flows = Counter(
            "metadata_iso_flows",
            "ISO provisioning flows, by outcome",
            ["outcome"],
            registry=self.registry,
        )
        self.iso_flow_seconds = Histogram(
            "metadata_iso_flow_seconds",
            "Duration of ISO provisioning flows",
            buckets=FLOW_BUCKETS,
            registry=self.registry,
        )

    def observe_request(
        self, path: str, status: int, seconds: float, family: str | None = None
    ) -> None:
        family = family or route_family(path)
        self.requests.labels(family, str(status)).inc()
        self.request_seconds.labels(family).observe(seconds)

    def observe_changes(self, changes: Sequence[Change]) -> None:
        """The change feed: a guest that just reported `configured` closes its boot."""
        for change in changes:
            vm = change.vm
            if vm is None or change.event != ChangeEvent.STATE or vm.state is not State.CONFIGURED:
                continue
            times = vm.state_times
            done = times.get(State.CONFIGURED.value)
            if done is None or done < self._clock() - 60:
                continue  # an old record arriving (catch-up), not a boot ending now
            for since in (State.REGISTERED, State.LEASED):
                began = times.get(since.value)
                if began is not None and began <= done:
                    self.to_configured.labels(since.value).observe(done - began)

    def observe_flow(self, outcome: str, seconds: float) -> None:
        self.iso_flows.labels(outcome).inc()
        self.iso_flow_seconds.observe(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def histogram_quantile(
    text: str, name: str, quantile: float, labels: dict[str, str] | None = None
) -> float | None:
    """A quantile of a histogram from exposition text, as Prometheus estimates it (the
    upper bound of the bucket holding it): for benchmarks and tests that read /metrics.
    Series that match `labels` are added together."""
    counts: dict[float, float] = {}
    for line in text.splitlines():
        if not line.startswith(f"{name}_bucket{{"):
            continue
        label_text, _, value = line[len(name) + len("_bucket{") :].partition("} ")
        pairs: dict[str, str] = {}
        for item in label_text.split(","):
            key, _, quoted = item.partition("=")
            pairs[key] = quoted.strip('"')
        if labels and any(pairs.get(k) != v for k, v in labels.items()):
            continue
        bound = float("inf") if pairs.get("le") == "+Inf" else float(pairs.get("le", "nan"))
        counts[bound] = counts.get(bound, 0.0) + float(value)
    ordered = sorted(counts.items())
    if not ordered or ordered[-1][1] == 0:
        return None
    target = quantile * ordered[-1][1]
    return next(bound for bound, count in ordered if count >= target)
