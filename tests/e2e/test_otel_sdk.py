"""Spans from the real OpenTelemetry Python SDK, over OTLP/gRPC and OTLP/HTTP, read back
through the Jaeger API field by field.

One request is traced per protocol, each as its own service:

    GET /orders/{id}   (server, every attribute type)
    └── load order     (internal, an event, a link to the producer span)
        └── SELECT orders (client, status ERROR with a description)

    publish order.created (producer, its own trace: the link target)

The SDK's own span objects (recorded by an InMemorySpanExporter beside the OTLP
exporter) give the exact ids and timestamps to compare with.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from helpers import (
    parent_hex,
    parent_of,
    sdk_pipeline,
    span_hex,
    spans_by_id,
    tags_of,
    trace_hex,
    wait_until,
)

TIME_TOLERANCE_US = 1_000
SCOPE_NAME, SCOPE_VERSION = "caracal-e2e", "1.2.3"

ROOT, CHILD, GRANDCHILD, PRODUCER = (
    "GET /orders/{id}",
    "load order",
    "SELECT orders",
    "publish order.created",
)
KINDS = {ROOT: "server", CHILD: "internal", GRANDCHILD: "client", PRODUCER: "producer"}

ROOT_ATTRIBUTES = {
    "http.request.method": "GET",
    "http.response.status_code": 200,
    "e2e.big_int": 2**62 + 1,
    "e2e.negative": -7,
    "e2e.ratio": 0.25,
    "e2e.cached": True,
    "e2e.retried": False,
    "e2e.regions": ["eu-west", "us-east", "ap-south"],
}
# How the API shows them: (type, value); lists are JSON text, as Jaeger shows arrays.
ROOT_TAGS = {
    "http.request.method": ("string", "GET"),
    "http.response.status_code": ("int64", 200),
    "e2e.big_int": ("int64", 2**62 + 1),
    "e2e.negative": ("int64", -7),
    "e2e.ratio": ("float64", 0.25),
    "e2e.cached": ("bool", True),
    "e2e.retried": ("bool", False),
    "e2e.regions": ("string", '["eu-west","us-east","ap-south"]'),
}
EVENT_NAME = "cache miss"
EVENT_ATTRIBUTES = {"cache.key": "order:42", "cache.attempt": 2, "cache.hit_ratio": 0.5}
EVENT_FIELDS = {
    "event": ("string", EVENT_NAME),
    "cache.key": ("string", "order:42"),
    "cache.attempt": ("int64", 2),
    "cache.hit_ratio": ("float64", 0.5),
}
ERROR_DESCRIPTION = "connection reset by peer"


def emit_request(tracer) -> None:
    """Traces one request, as described in the module docstring."""
    producer = tracer.start_span(PRODUCER, kind=SpanKind.PRODUCER)
    producer.end()
    with tracer.start_as_current_span(ROOT, kind=SpanKind.SERVER, attributes=ROOT_ATTRIBUTES):
        link = Link(producer.get_span_context(), {"e2e.link": "cause"})
        with tracer.start_as_current_span(CHILD, kind=SpanKind.INTERNAL, links=[link]) as child:
            child.add_event(EVENT_NAME, EVENT_ATTRIBUTES)
            with tracer.start_as_current_span(
                GRANDCHILD,
                kind=SpanKind.CLIENT,
                attributes={"db.system": "postgresql"},
                record_exception=False,
                set_status_on_exception=False,
            ) as grandchild:
                grandchild.set_status(Status(StatusCode.ERROR, ERROR_DESCRIPTION))


@dataclass
class Exported:
    """What the SDK sent, by span name, and what the API returns for it."""

    service: str
    sent: dict[str, ReadableSpan]
    trace: dict
    producer_trace: dict

    def stored(self, name: str) -> dict:
        """The API's view of the span the SDK named `name`."""
        span_id = span_hex(self.sent[name].context.span_id)
        trace = self.producer_trace if name == PRODUCER else self.trace
        return spans_by_id(trace)[span_id]


def fetch_trace(caracal, trace_id: int, num_spans: int) -> dict:
    def complete():
        found = caracal.api.trace(trace_hex(trace_id))
        assert len(found["spans"]) == num_spans, found
        return found

    return wait_until(complete, timeout=3)


@pytest.fixture(scope="module", params=["grpc", "http"])
def exported(request, caracal) -> Exported:
    service = f"e2e-sdk-{request.param}"
    pipeline = sdk_pipeline(caracal, service, request.param)
    emit_request(pipeline.tracer(SCOPE_NAME, SCOPE_VERSION))
    pipeline.flush()
    sent = {span.name: span for span in pipeline.finished()}
    pipeline.shutdown()
    assert sorted(sent) == sorted(KINDS)
    return Exported(
        service=service,
        sent=sent,
        trace=fetch_trace(caracal, sent[ROOT].context.trace_id, 3),
        producer_trace=fetch_trace(caracal, sent[PRODUCER].context.trace_id, 1),
    )


def test_every_span_arrives_with_its_parent(exported):
    assert exported.trace["traceID"] == trace_hex(exported.sent[ROOT].context.trace_id)
    for name, sent in exported.sent.items():
        stored = exported.stored(name)
        assert stored["operationName"] == name
        assert parent_of(stored) == parent_hex(sent), name
    assert parent_of(exported.stored(ROOT)) is None


def test_attributes_keep_their_types(exported):
    tags = tags_of(exported.stored(ROOT))
    assert {key: tags.get(key) for key in ROOT_TAGS} == ROOT_TAGS
    assert tags_of(exported.stored(GRANDCHILD))["db.system"] == ("string", "postgresql")


def test_span_kinds(exported):
    for name, kind in KINDS.items():
        assert tags_of(exported.stored(name))["span.kind"] == ("string", kind), name


def test_error_status(exported):
    tags = tags_of(exported.stored(GRANDCHILD))
    assert tags["otel.status_code"] == ("string", "ERROR")
    assert tags["error"] == ("bool", True)
    assert tags["otel.status_description"] == ("string", ERROR_DESCRIPTION)
    for name in (ROOT, CHILD, PRODUCER):
        assert not {"error", "otel.status_code"} & set(tags_of(exported.stored(name))), name


def test_event_becomes_log(exported):
    (event,) = exported.sent[CHILD].events
    (log,) = exported.stored(CHILD)["logs"]
    assert abs(log["timestamp"] - event.timestamp / 1_000) <= TIME_TOLERANCE_US
    assert tags_of(log) == EVENT_FIELDS


def test_link_becomes_reference(exported):
    target = exported.sent[PRODUCER].context
    references = exported.stored(CHILD)["references"]
    assert {
        "refType": "FOLLOWS_FROM",
        "traceID": trace_hex(target.trace_id),
        "spanID": span_hex(target.span_id),
    } in references
    assert len(references) == 2, references


def test_times_match_the_sdk(exported):
    for name, sent in exported.sent.items():
        stored = exported.stored(name)
        assert abs(stored["startTime"] - sent.start_time / 1_000) <= TIME_TOLERANCE_US, name
        duration_us = (sent.end_time - sent.start_time) / 1_000
        assert abs(stored["duration"] - duration_us) <= TIME_TOLERANCE_US, name


def test_process_and_scope(exported):
    for name in exported.sent:
        stored = exported.stored(name)
        trace = exported.producer_trace if name == PRODUCER else exported.trace
        process = trace["processes"][stored["processID"]]
        assert process["serviceName"] == exported.service
        process_tags = tags_of(process)
        assert process_tags["telemetry.sdk.language"] == ("string", "python")
        assert process_tags["telemetry.sdk.name"] == ("string", "opentelemetry")
        assert "service.name" not in process_tags
        tags = tags_of(stored)
        assert tags["otel.scope.name"] == ("string", SCOPE_NAME)
        assert tags["otel.scope.version"] == ("string", SCOPE_VERSION)
    assert len(exported.trace["processes"]) == 1


@pytest.mark.parametrize(
    "tags",
    [
        {"e2e.cached": "true"},
        {"http.response.status_code": 200},
        {"e2e.ratio": "0.25", "http.request.method": "GET"},
    ],
    ids=["bool", "int", "float-and-string"],
)
def test_search_by_typed_tags(caracal, exported, tags):
    found = caracal.api.search(service=exported.service, operation=ROOT, tags=tags)
    assert [trace["traceID"] for trace in found] == [exported.trace["traceID"]]
    mismatch = {**tags, "http.request.method": "POST"}
    assert caracal.api.search(service=exported.service, tags=mismatch) == []


def test_services_and_operations(caracal, exported):
    # Services and operations come from the aggregates, flushed every ~2 s.
    wait_until(lambda: exported.service in caracal.api.data("/api/services"))
    operations = caracal.api.data(f"/api/services/{exported.service}/operations")
    assert sorted(operations) == sorted(KINDS)
    for kind in ("server", "client", "producer"):
        by_kind = caracal.api.data(
            "/api/operations", {"service": exported.service, "spanKind": kind}
        )
        expected = [
            {"name": name, "spanKind": kind} for name, each in KINDS.items() if each == kind
        ]
        assert by_kind == expected
    all_kinds = caracal.api.data("/api/operations", {"service": exported.service})
    assert sorted((op["name"], op["spanKind"]) for op in all_kinds) == sorted(KINDS.items())


def test_unknown_and_malformed_trace_ids(caracal):
    body = caracal.api.get(f"/api/traces/{'ab' * 16}", status=404)
    assert body["errors"], body
    caracal.api.get("/api/traces/not-a-trace-id", status=400)
