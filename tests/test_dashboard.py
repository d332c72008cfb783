"""The example Grafana dashboard (examples/grafana-dashboard.json) stays true: valid
JSON, and every metric each panel's query names is one the server exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

from metadata_server.metrics import Metrics

DASHBOARD = Path(__file__).resolve().parent.parent / "examples" / "grafana-dashboard.json"


def exported() -> set[str]:
    """The sample names a server exports, with every part that reports to /metrics on."""
    metrics = Metrics()
    metrics.readings.states = dict
    metrics.readings.dhcp = dict
    metrics.readings.guard = lambda: {"address": 1}
    metrics.readings.connection_refusals = lambda: {"too many connections": 1}
    metrics.readings.store_healthy = lambda: True
    metrics.readings.feed_lag = lambda: 0.0
    metrics.observe_request("/v1/config", 200, 0.001)
    metrics.to_configured.labels("registered").observe(1)
    metrics.observe_flow("configured", 1)
    text = metrics.exposition().decode()
    return {
        line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and line[0] != "#"
    }


def test_every_panel_queries_metrics_the_server_exports() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    names = exported()
    assert dashboard["panels"]
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            for metric in re.findall(r"\bmetadata_[a-z_]+", target["expr"]):
                assert metric in names, (panel["title"], metric)
