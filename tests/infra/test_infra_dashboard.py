"""infra/grafana/bridge-dashboard.json: a dashboard Grafana can import, whose queries read only
the bridge's own metrics, each the way its type calls for: counters through rate(),
histograms through histogram_quantile() over their buckets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import promql_parser as pq

from tests.infra.infra_files import (
    COUNTERS,
    GAUGES,
    HISTOGRAMS,
    METRICS,
    as_promql,
    dashboard,
    dashboard_panels,
    dashboard_queries,
)

RATE_FUNCTIONS = {"rate", "irate", "increase"}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


@dataclass(frozen=True)
class Use:
    """A metric read by a query, with the functions and aggregations around it, innermost
    last, and the labels each aggregation groups by."""

    metric: str
    around: tuple[str, ...]
    grouping: tuple[tuple[str, ...], ...]


def _uses(expr: str) -> list[Use]:
    found: list[Use] = []

    def visit(node: Any, around: tuple[str, ...], grouping: tuple[tuple[str, ...], ...]) -> None:
        if isinstance(node, pq.VectorSelector):
            found.append(Use(str(node.name), around, grouping))
        elif isinstance(node, pq.MatrixSelector):
            visit(node.vector_selector, around, grouping)
        elif isinstance(node, pq.Call):
            for arg in node.args:
                visit(arg, (*around, node.func.name), grouping)
        elif isinstance(node, pq.AggregateExpr):
            labels = tuple(node.modifier.labels) if node.modifier is not None else ()
            visit(node.expr, (*around, str(node.op)), (*grouping, labels))
        elif isinstance(node, pq.BinaryExpr):
            visit(node.lhs, around, grouping)
            visit(node.rhs, around, grouping)
        elif isinstance(node, pq.ParenExpr | pq.UnaryExpr | pq.SubqueryExpr):
            visit(node.expr, around, grouping)

    visit(pq.parse(as_promql(expr)), (), ())
    return found


def _all_uses() -> list[tuple[str, Use]]:
    return [(title, use) for title, expr in dashboard_queries() for use in _uses(expr)]


def _base(metric: str) -> str:
    for suffix in HISTOGRAM_SUFFIXES:
        if metric.removesuffix(suffix) in HISTOGRAMS:
            return metric.removesuffix(suffix)
    return metric


def test_dashboard_is_importable() -> None:
    board = dashboard()
    assert board["title"] and board["uid"]
    assert isinstance(board["schemaVersion"], int)
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    panels = dashboard_panels()
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
            assert panel["targets"], panel["title"]


def test_queries_read_only_the_bridge_metrics() -> None:
    for title, use in _all_uses():
        assert _base(use.metric) in METRICS, f"panel {title!r} reads unknown {use.metric}"


def test_every_bridge_metric_is_on_the_dashboard() -> None:
    shown = {_base(use.metric) for _title, use in _all_uses()}
    assert shown == METRICS, f"not shown: {sorted(METRICS - shown)}"


def test_counters_are_read_as_rates() -> None:
    for title, use in _all_uses():
        if use.metric in COUNTERS:
            assert RATE_FUNCTIONS & set(use.around), f"panel {title!r}: raw {use.metric}"


def test_histograms_are_read_as_quantiles_of_their_buckets() -> None:
    for title, use in _all_uses():
        if _base(use.metric) not in HISTOGRAMS:
            continue
        assert use.metric != _base(use.metric), f"panel {title!r}: {use.metric} has no series"
        if use.metric.endswith("_bucket"):
            assert use.around[0] == "histogram_quantile", (title, use)
            assert RATE_FUNCTIONS & set(use.around), (title, use)
            # The aggregation right under histogram_quantile must keep the buckets apart.
            assert "le" in use.grouping[0], f"panel {title!r} sums the buckets together"


def test_gauges_are_not_rated() -> None:
    for title, use in _all_uses():
        if use.metric in GAUGES:
            assert not RATE_FUNCTIONS & set(use.around), f"panel {title!r}: rate of a gauge"


def test_latency_panels_show_p50_p95_p99() -> None:
    for metric in ("bridge_turn_latency_seconds", "bridge_clear_latency_seconds"):
        quantiles = set()
        for _title, expr in dashboard_queries():
            if f"{metric}_bucket" in expr and expr.startswith("histogram_quantile("):
                quantiles.add(expr.removeprefix("histogram_quantile(").split(",")[0])
        assert {"0.5", "0.95", "0.99"} <= quantiles, (metric, quantiles)


def test_calls_active_is_shown_by_channel() -> None:
    groupings = [
        use.grouping
        for _title, use in _all_uses()
        if use.metric == "bridge_calls_active" and use.grouping
    ]
    assert any("channel" in grouping[0] for grouping in groupings)


def test_the_metric_list_is_the_bridges_own_registry() -> None:
    """The names above are what the bridge really exposes, each with its type: a metric
    renamed or added in bridge/metrics.py must be renamed or added on the dashboard too."""
    from bridge.metrics import BridgeMetrics

    kinds = {"gauge": GAUGES, "counter": COUNTERS, "histogram": HISTOGRAMS}
    exposed: dict[str, set[str]] = {kind: set() for kind in kinds}
    for family in BridgeMetrics().registry.collect():
        name = family.name + "_total" if family.type == "counter" else family.name
        exposed[family.type].add(name)
    assert exposed == kinds
