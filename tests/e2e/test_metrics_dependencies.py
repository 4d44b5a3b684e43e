"""RED metrics and dependency edges from a small system traced with the real SDK.

Each of CALLS requests goes

    e2e-gateway  GET /checkout (server) -> call orders (client)
        -> e2e-orders  GET /orders (server) -> SELECT orders (client, db.system=postgresql)

with the W3C traceparent carried from gateway to orders as a real service would. The
gateway exports over OTLP/gRPC, orders over OTLP/HTTP. Timestamps are explicit, in the
last few seconds, so every duration is known; every tenth orders server span fails.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import pytest
from opentelemetry import propagate, trace
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, Status, StatusCode

from helpers import (
    MS_NS,
    export_request,
    new_span,
    now_ns,
    parent_hex,
    parent_of,
    sdk_pipeline,
    send,
    span_hex,
    spans_by_id,
    string_attribute,
    trace_hex,
    wait_until,
)

GATEWAY, ORDERS, DATABASE = "e2e-gateway", "e2e-orders", "postgresql"
ORDERS_OP = "GET /orders"
CALLS = 400
CALL_SPACING_NS = 10 * MS_NS
AGGREGATE_TIMEOUT_S = 20
QUANTILE_TOLERANCE = 0.01


def orders_duration_ns(call: int) -> int:
    """10 ms growing 0.2% per rank, shuffled over the calls (10 ms .. 22 ms)."""
    rank = call * 7919 % CALLS
    return round(10 * MS_NS * 1.002**rank)


def db_duration_ns(call: int) -> int:
    """90% of the orders span: the union of both stays dense, so its quantiles are sharp."""
    return orders_duration_ns(call) * 9 // 10


def is_error(call: int) -> bool:
    return call % 10 == 0


def traced_call(gateway_tracer, orders_tracer, call: int, start_ns: int) -> None:
    """One request through both services, starting at `start_ns`."""
    duration = orders_duration_ns(call)
    server = gateway_tracer.start_span("GET /checkout", kind=SpanKind.SERVER, start_time=start_ns)
    client = gateway_tracer.start_span(
        "call orders",
        context=trace.set_span_in_context(server),
        kind=SpanKind.CLIENT,
        start_time=start_ns + MS_NS,
    )
    headers: dict[str, str] = {}
    propagate.inject(headers, context=trace.set_span_in_context(client))

    orders = orders_tracer.start_span(
        ORDERS_OP,
        context=propagate.extract(headers),
        kind=SpanKind.SERVER,
        start_time=start_ns + 2 * MS_NS,
    )
    query = orders_tracer.start_span(
        "SELECT orders",
        context=trace.set_span_in_context(orders),
        kind=SpanKind.CLIENT,
        start_time=start_ns + 3 * MS_NS,
        attributes={"db.system": DATABASE},
    )
    query.end(end_time=start_ns + 3 * MS_NS + db_duration_ns(call))
    if is_error(call):
        orders.set_status(Status(StatusCode.ERROR, "out of stock"))
    orders.end(end_time=start_ns + 2 * MS_NS + duration)
    client.end(end_time=start_ns + 3 * MS_NS + duration)
    server.end(end_time=start_ns + 5 * MS_NS + duration)


@dataclass
class System:
    """What the SDKs sent: the query window (Unix ms, from a 10 s bucket start) and
    every span with the service that sent it."""

    window: tuple[int, int]
    spans: list[tuple[str, ReadableSpan]]


@pytest.fixture(scope="module")
def system(caracal) -> System:
    """Sends the calls through both services."""
    pipelines = {GATEWAY: sdk_pipeline(caracal, GATEWAY, "grpc")}
    pipelines[ORDERS] = sdk_pipeline(caracal, ORDERS, "http")
    first_start = now_ns() - CALLS * CALL_SPACING_NS - 2_000 * MS_NS
    tracers = [pipelines[GATEWAY].tracer(), pipelines[ORDERS].tracer()]
    for call in range(CALLS):
        traced_call(*tracers, call, first_start + call * CALL_SPACING_NS)
    spans = []
    for service, pipeline in pipelines.items():
        pipeline.flush()
        spans += [(service, span) for span in pipeline.finished()]
        pipeline.shutdown()
    assert len(spans) == 4 * CALLS
    start_ms = first_start // 1_000_000_000 // 10 * 10 * 1_000
    return System((start_ms, time.time_ns() // 1_000_000 + 10_000), spans)


@pytest.fixture(scope="module")
def window(system) -> tuple[int, int]:
    return system.window


def exact_quantile(values: list[int], quantile: float) -> int:
    """The value at rank ceil(q * n), as HdrHistogram ranks."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(quantile * len(ordered))) - 1]


def metrics_when_complete(caracal, window, expected_count: int, **params: str) -> dict:
    """`/api/v1/metrics` once it counts `expected_count` spans (aggregates flush ~2 s)."""
    start_ms, end_ms = window
    query = {"start": start_ms, "end": end_ms, "step": 10} | params

    def complete():
        body = caracal.api.get("/api/v1/metrics", query)
        assert body["total"]["count"] == expected_count, body["total"]
        return body

    body = wait_until(complete, timeout=AGGREGATE_TIMEOUT_S)
    assert sum(point["count"] for point in body["series"]) == expected_count
    assert sum(point["errors"] for point in body["series"]) == body["total"]["errors"]
    return body


def assert_latency(total: dict, durations_ns: list[int]) -> None:
    durations_us = [duration / 1_000 for duration in durations_ns]
    assert total["min_us"] == pytest.approx(min(durations_us), abs=0.001)
    assert total["max_us"] == pytest.approx(max(durations_us), abs=0.001)
    assert total["avg_us"] == pytest.approx(sum(durations_us) / len(durations_us), rel=1e-6)
    for quantile, key in ((0.5, "p50_us"), (0.9, "p90_us"), (0.99, "p99_us")):
        exact = exact_quantile(durations_ns, quantile) / 1_000
        assert total[key] == pytest.approx(exact, rel=QUANTILE_TOLERANCE), key


def test_dependencies(caracal, window):
    _, end_ms = window
    params = {"endTs": end_ms, "lookback": 600_000}
    expected = [
        {
            "parent": GATEWAY,
            "child": ORDERS,
            "callCount": CALLS,
            "errorCount": CALLS // 10,
            "childType": "service",
        },
        {
            "parent": ORDERS,
            "child": DATABASE,
            "callCount": CALLS,
            "errorCount": 0,
            "childType": "database",
        },
    ]

    def complete():
        edges = caracal.api.data("/api/dependencies", params)
        ours = [edge for edge in edges if edge["parent"] in (GATEWAY, ORDERS)]
        assert sorted(ours, key=lambda edge: edge["parent"]) == expected
        return True

    wait_until(complete, timeout=AGGREGATE_TIMEOUT_S)


def test_peer_service_of_an_instrumented_callee_is_one_edge(caracal):
    """Instrumentations often set peer.service on client spans; when the callee is
    instrumented too, each call is still one edge with one count."""
    web, api, calls = "e2e-web", "e2e-api", 5
    peer = [string_attribute("peer.service", api)]
    clients = [
        new_span("call api", kind=Span.SPAN_KIND_CLIENT, attributes=peer) for _ in range(calls)
    ]
    servers = [
        new_span("GET /api", trace_id=client.trace_id, parent_span_id=client.span_id)
        for client in clients
    ]
    send(caracal, "http", export_request(*clients, service=web))
    send(caracal, "grpc", export_request(*servers, service=api))

    def counted():
        edges = [edge for edge in caracal.api.data("/api/dependencies") if edge["parent"] == web]
        assert sum(edge["callCount"] for edge in edges) >= calls, edges
        return edges

    edges = wait_until(counted, timeout=AGGREGATE_TIMEOUT_S)
    assert [(edge["child"], edge["callCount"]) for edge in edges] == [(api, calls)]


def test_operation_metrics(caracal, window):
    body = metrics_when_complete(caracal, window, CALLS, service=ORDERS, operation=ORDERS_OP)
    assert body["total"]["errors"] == CALLS // 10
    assert_latency(body["total"], [orders_duration_ns(call) for call in range(CALLS)])


def test_service_metrics(caracal, window):
    body = metrics_when_complete(caracal, window, 2 * CALLS, service=ORDERS)
    assert body["total"]["errors"] == CALLS // 10
    durations = [orders_duration_ns(call) for call in range(CALLS)]
    assert_latency(body["total"], durations + [db_duration_ns(call) for call in range(CALLS)])

    gateway = metrics_when_complete(caracal, window, 2 * CALLS, service=GATEWAY)
    assert gateway["total"]["errors"] == 0


def test_metrics_steps_cover_the_window(caracal, window):
    start_ms, end_ms = window
    body = metrics_when_complete(caracal, window, CALLS, service=ORDERS, operation=ORDERS_OP)
    timestamps = [point["ts"] for point in body["series"]]
    assert timestamps == sorted(timestamps)
    assert all(ts % 10_000 == 0 and start_ms <= ts < end_ms for ts in timestamps), timestamps


@pytest.mark.parametrize("step", [60, 3_600, 86_400], ids=["1m", "1h", "1d"])
def test_every_rollup_agrees(caracal, window, step):
    """A window aligned to `step` is read from that rollup and counts the same spans."""
    start_ms, end_ms = window
    step_ms = step * 1_000
    aligned = (start_ms // step_ms * step_ms, -(-end_ms // step_ms) * step_ms)
    params = {"service": ORDERS, "operation": ORDERS_OP, "step": str(step)}
    body = metrics_when_complete(caracal, aligned, CALLS, **params)
    assert all(point["ts"] % step_ms == 0 for point in body["series"]), body["series"]
    assert body["total"]["errors"] == CALLS // 10
    assert_latency(body["total"], [orders_duration_ns(call) for call in range(CALLS)])


def test_metrics_per_instance(caracal):
    """Each instance of a service (OTLP `service.instance.id`, else `host.name`) has its
    own exact RED metrics at one-minute and one-hour steps; the service has them all."""
    service = "e2e-fleet"
    # The SDK sets a random `service.instance.id` unless told one; an empty one is unset.
    instances = {
        "fleet-a": ("grpc", {"service.instance.id": "fleet-a", "host.name": "shared-host"}),
        "host-b": ("http", {"service.instance.id": "", "host.name": "host-b"}),
    }
    start_ns = now_ns() - 5_000 * MS_NS
    durations: dict[str, list[int]] = {}
    for index, (instance, (protocol, resource)) in enumerate(instances.items()):
        pipeline = sdk_pipeline(caracal, service, protocol, resource)
        tracer = pipeline.tracer()
        durations[instance] = [
            (index + 1) * MS_NS + call * 37_000 for call in range(30 + 20 * index)
        ]
        for call, duration in enumerate(durations[instance]):
            span = tracer.start_span("GET /fleet", kind=SpanKind.SERVER, start_time=start_ns)
            span.end(end_time=start_ns + duration)
        pipeline.flush()
        pipeline.shutdown()
    everyone = [value for values in durations.values() for value in values]
    start_ms, end_ms = start_ns // 1_000_000, time.time_ns() // 1_000_000
    for step_ms in (60_000, 3_600_000):
        window = (start_ms // step_ms * step_ms, -(-end_ms // step_ms) * step_ms)
        step = str(step_ms // 1_000)
        for instance, values in durations.items():
            body = metrics_when_complete(
                caracal, window, len(values), service=service, instance=instance, step=step
            )
            assert_latency(body["total"], values)
        body = metrics_when_complete(caracal, window, len(everyone), service=service, step=step)
        assert_latency(body["total"], everyone)
    # `host.name` names the instance only when `service.instance.id` is not set.
    query = {"service": service, "instance": "shared-host", "step": 3_600}
    body = caracal.api.get("/api/v1/metrics", query | dict(zip(("start", "end"), window)))
    assert body["total"]["count"] == 0


def test_traces_cross_services(caracal, system):
    """Spans of one trace, sent by two services over two transports, form one tree."""
    expected: dict[str, dict[str, tuple[str, str | None]]] = {}
    for service, span in system.spans:
        by_span = expected.setdefault(trace_hex(span.context.trace_id), {})
        by_span[span_hex(span.context.span_id)] = (service, parent_hex(span))
    sample = sorted(expected)[:50]
    for trace_id, found in caracal.api.traces_by_id(sample).items():
        services = {name: process["serviceName"] for name, process in found["processes"].items()}
        assert sorted(services.values()) == [GATEWAY, ORDERS]
        stored = {
            span_id: (services[span["processID"]], parent_of(span))
            for span_id, span in spans_by_id(found).items()
        }
        assert stored == expected[trace_id]
        sample.remove(trace_id)
    assert sample == [], "traces missing"


def test_sigterm_writes_aggregates_still_in_memory(launch_caracal):
    """Spans acknowledged just before SIGTERM are counted: the collector writes its
    in-memory aggregates on the way out (the next server reads them)."""
    first = launch_caracal()
    start_ms = time.time_ns() // 10_000_000_000 * 10_000 - 10_000
    pipeline = sdk_pipeline(first, ORDERS, "grpc")
    for _ in range(CALLS // 10):
        pipeline.tracer().start_span(ORDERS_OP, kind=SpanKind.SERVER).end()
    pipeline.flush()
    pipeline.shutdown()
    first.stop_cleanly()

    second = launch_caracal()
    window = (start_ms, time.time_ns() // 1_000_000 + 10_000)
    metrics_when_complete(second, window, CALLS // 10, service=ORDERS, operation=ORDERS_OP)
