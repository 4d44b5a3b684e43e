"""10,000 spans from the real SDK over OTLP/gRPC: every one comes back with its parent,
and a search by service + operation + tag + minDuration finds exactly the right traces.

1,000 traces of 10 spans (a root, 3 children, 2 grandchildren under each child), with
explicit timestamps so durations are known. Traces fall into cohorts by index:

    index % 10 == 0  root cohort=vip,      root 250 ms   <- the only search hits
    index % 10 == 1  root cohort=vip,      root  50 ms   (too short)
    index % 10 == 2  root cohort=standard, root 250 ms   (wrong tag value)
    index % 10 == 3  root cohort=standard, root 300 ms, child "reserve stock" is
                     cohort=vip and 250 ms              (the matching span has the
                                                          wrong operation)
    otherwise        root cohort=standard, root  50 ms
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from helpers import (
    MS_NS,
    Api,
    export_request,
    new_span,
    now_ns,
    parent_hex,
    parent_of,
    sdk_pipeline,
    send,
    span_hex,
    trace_hex,
)

SERVICE = "e2e-volume"
ROOT_OP = "POST /checkout"
CHILD_OPS = ("reserve stock", "charge card", "send receipt")
GRANDCHILD_OPS = ("db query", "cache get")
NUM_TRACES = 1_000
SPANS_PER_TRACE = 1 + len(CHILD_OPS) * (1 + len(GRANDCHILD_OPS))
TRACE_SPACING_NS = 50 * MS_NS
SEARCH_MIN_DURATION = "200ms"
CONCURRENT_CLIENTS = 8
REQUESTS_PER_CLIENT = 4
SPANS_PER_REQUEST = 50


def cohort(index: int) -> tuple[str, int, bool]:
    """(root cohort tag, root duration in ms, whether "reserve stock" is a vip match)."""
    return {
        0: ("vip", 250, False),
        1: ("vip", 50, False),
        2: ("standard", 250, False),
        3: ("standard", 300, True),
    }.get(index % 10, ("standard", 50, False))


def emit_trace(tracer, index: int, start_ns: int) -> None:
    """One 10-span trace starting at `start_ns`; children take 20 ms, grandchildren 5 ms."""
    root_cohort, root_ms, child_is_vip = cohort(index)
    root = tracer.start_span(
        ROOT_OP,
        kind=SpanKind.SERVER,
        start_time=start_ns,
        attributes={"e2e.cohort": root_cohort, "e2e.index": index},
    )
    for child_number, child_op in enumerate(CHILD_OPS):
        child_start = start_ns + (1 + child_number * 30) * MS_NS
        vip = child_is_vip and child_op == "reserve stock"
        child = tracer.start_span(
            child_op,
            context=trace.set_span_in_context(root),
            kind=SpanKind.INTERNAL,
            start_time=child_start,
            attributes={"e2e.cohort": "vip" if vip else "standard"},
        )
        for grandchild_number, grandchild_op in enumerate(GRANDCHILD_OPS):
            grandchild_start = child_start + (1 + grandchild_number * 6) * MS_NS
            grandchild = tracer.start_span(
                grandchild_op,
                context=trace.set_span_in_context(child),
                kind=SpanKind.CLIENT,
                start_time=grandchild_start,
            )
            grandchild.end(end_time=grandchild_start + 5 * MS_NS)
        child.end(end_time=child_start + (250 if vip else 20) * MS_NS)
    root.end(end_time=start_ns + root_ms * MS_NS)


@dataclass
class Sent:
    """What the SDK sent: when trace 0 started, and {trace id: {span id: parent id}}."""

    first_start_ns: int
    parents: dict[str, dict[str, str | None]]

    def root_start_us(self, index: int) -> int:
        return (self.first_start_ns + index * TRACE_SPACING_NS) // 1_000


@pytest.fixture(scope="module")
def sent(caracal) -> Sent:
    """Sends the 1,000 traces."""
    pipeline = sdk_pipeline(
        caracal,
        SERVICE,
        "grpc",
        max_queue_size=NUM_TRACES * SPANS_PER_TRACE,
        max_export_batch_size=2_000,
        schedule_delay_millis=100,
    )
    tracer = pipeline.tracer()
    first_start = now_ns() - NUM_TRACES * TRACE_SPACING_NS - 10_000 * MS_NS
    for index in range(NUM_TRACES):
        emit_trace(tracer, index, first_start + index * TRACE_SPACING_NS)
    pipeline.flush()
    spans = pipeline.finished()
    pipeline.shutdown()
    assert len(spans) == NUM_TRACES * SPANS_PER_TRACE
    parents: dict[str, dict[str, str | None]] = {}
    for span in spans:
        by_span = parents.setdefault(trace_hex(span.context.trace_id), {})
        by_span[span_hex(span.context.span_id)] = parent_hex(span)
    return Sent(first_start, parents)


def root_index(trace: dict) -> int:
    (root,) = [span for span in trace["spans"] if parent_of(span) is None]
    return next(tag["value"] for tag in root["tags"] if tag["key"] == "e2e.index")


def indexes(found: list[dict]) -> list[int]:
    """Indexes of the traces found, in the order found."""
    return [root_index(trace) for trace in found]


def cohort_indexes(*cohorts: int) -> list[int]:
    """Indexes of the traces in `cohorts` (index % 10), ascending."""
    return [index for index in range(NUM_TRACES) if index % 10 in cohorts]


def test_every_span_is_stored_with_its_parent(caracal, sent):
    assert len(sent.parents) == NUM_TRACES
    stored = caracal.api.traces_by_id(list(sent.parents))
    missing = set(sent.parents) - set(stored)
    assert not missing, f"{len(missing)} traces missing"
    assert len(stored) == NUM_TRACES
    for trace_id, spans in sent.parents.items():
        parents = {span["spanID"]: parent_of(span) for span in stored[trace_id]["spans"]}
        assert parents == spans, trace_id


def test_search_by_service_operation_tag_and_min_duration(caracal, sent):
    search = {"service": SERVICE, "operation": ROOT_OP, "tags": {"e2e.cohort": "vip"}}
    found = caracal.api.search(**search, minDuration=SEARCH_MIN_DURATION, limit=1000)
    assert sorted(indexes(found)) == cohort_indexes(0)
    # Without the duration bound the short vip traces match too; maxDuration keeps only them.
    assert sorted(indexes(caracal.api.search(**search, limit=1000))) == cohort_indexes(0, 1)
    found = caracal.api.search(**search, maxDuration="100ms", limit=1000)
    assert sorted(indexes(found)) == cohort_indexes(1)


def test_search_limit_returns_newest_first(caracal, sent):
    found = caracal.api.search(service=SERVICE, operation=ROOT_OP, limit=5)
    assert indexes(found) == [999, 998, 997, 996, 995]


def test_search_by_time_window(caracal, sent):
    """start and end (µs) bound the matching span's start, both ends included."""
    window = {"start": sent.root_start_us(900), "end": sent.root_start_us(949)}
    found = caracal.api.search(service=SERVICE, operation=ROOT_OP, limit=1000, **window)
    assert sorted(indexes(found)) == list(range(900, 950))


def test_concurrent_exports_are_readable_once_acknowledged(caracal):
    """Clients export at once over both transports; each request is readable as soon
    as its export returns (the collector acknowledges only stored spans)."""

    def client(number: int) -> int:
        transport = "grpc" if number % 2 else "http"
        api = Api(caracal.api.base_url)
        for _ in range(REQUESTS_PER_CLIENT):
            trace_id = os.urandom(16)
            spans = [
                new_span(f"client {number}", trace_id=trace_id) for _ in range(SPANS_PER_REQUEST)
            ]
            body = export_request(*spans, service=f"e2e-concurrent-{number}")
            assert not send(caracal, transport, body).HasField("partial_success")
            assert len(api.trace(trace_id.hex())["spans"]) == SPANS_PER_REQUEST
        return REQUESTS_PER_CLIENT

    with ThreadPoolExecutor(CONCURRENT_CLIENTS) as pool:
        done = sum(pool.map(client, range(CONCURRENT_CLIENTS)))
    assert done == CONCURRENT_CLIENTS * REQUESTS_PER_CLIENT
