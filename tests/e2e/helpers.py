"""Shared helpers for the end-to-end tests: polling, the query API, the OTel SDK, OTLP.

The `caracal` fixture (conftest.py) yields a `Caracal`; tests talk to it through
`caracal.api` and build SDK pipelines with `sdk_pipeline`.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import requests
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcSpanExporter,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpSpanExporter,
)
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource as ProtoResource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

EXPORT_PATH = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
MS_NS = 1_000_000


def fixtures_dir() -> Path:
    """The shared fixtures: CARACAL_FIXTURES, or ../shared/fixtures beside the checkout."""
    default = Path(__file__).resolve().parents[3] / "shared" / "fixtures"
    return Path(os.environ.get("CARACAL_FIXTURES", default))


def wait_until(check: Callable[[], Any], timeout: float = 10.0, interval: float = 0.1) -> Any:
    """Calls `check` until it returns a truthy value (returned) or `timeout` seconds pass.

    `check` may also raise AssertionError to mean "not yet"; the last such error is
    re-raised on timeout, so a failing poll reports what was wrong.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
            if value:
                return value
            failure: AssertionError = AssertionError(f"still {value!r} after {timeout} s")
        except AssertionError as error:
            failure = error
        if time.monotonic() >= deadline:
            raise failure
        time.sleep(interval)


def now_ns() -> int:
    return time.time_ns()


def trace_hex(trace_id: int) -> str:
    return format(trace_id, "032x")


def span_hex(span_id: int) -> str:
    return format(span_id, "016x")


def parent_hex(span: ReadableSpan) -> str | None:
    """The parent span id of an SDK span, as the API shows it; None for roots."""
    return span_hex(span.parent.span_id) if span.parent else None


# --- the query API -------------------------------------------------------------------


def scrape(address: str) -> dict[str, float]:
    """`{series: value}` of one `GET /metrics` scrape, series written as the text shows
    them (`caracal_spool_batches`, `caracal_received_requests_total{receiver="zipkin"}`)."""
    response = requests.get(f"http://{address}/metrics", timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("application/openmetrics-text")
    assert response.text.endswith("# EOF\n")
    samples = {}
    for line in response.text.splitlines():
        if line and not line.startswith("#"):
            series, value = line.rsplit(" ", 1)
            samples[series] = float(value)
    return samples


@dataclass
class Api:
    """The Jaeger-style query API of one Caracal."""

    base_url: str
    session: requests.Session = field(default_factory=requests.Session)

    def get(self, path: str, params: Any = None, status: int = 200) -> Any:
        """GETs `path`, asserts the status code, returns the decoded JSON body."""
        response = self.session.get(self.base_url + path, params=params, timeout=30)
        assert response.status_code == status, (
            f"GET {response.url}: {response.status_code} {response.text[:500]}"
        )
        return response.json() if response.content else None

    def data(self, path: str, params: Any = None) -> Any:
        """The `data` of a successful Jaeger envelope."""
        body = self.get(path, params)
        assert body.get("errors") is None, body
        return body["data"]

    def trace(self, trace_id: str) -> dict:
        traces = self.data(f"/api/traces/{trace_id}")
        assert len(traces) == 1, traces
        return traces[0]

    def traces_by_id(self, trace_ids: list[str], chunk: int = 50) -> dict[str, dict]:
        """Fetches traces by id with `/api/traces?traceID=...`, `chunk` ids a request."""
        found = {}
        for index in range(0, len(trace_ids), chunk):
            ids = trace_ids[index : index + chunk]
            for trace in self.data("/api/traces", [("traceID", one) for one in ids]):
                found[trace["traceID"]] = trace
        return found

    def search(self, **params: Any) -> list[dict]:
        if isinstance(params.get("tags"), dict):
            params["tags"] = json.dumps(params["tags"])
        return self.data("/api/traces", params)

    def healthy(self) -> bool:
        try:
            return self.session.get(self.base_url + "/healthz", timeout=2).status_code == 200
        except requests.RequestException:
            return False


# --- reading Jaeger spans --------------------------------------------------------------


def spans_by_id(trace: dict) -> dict[str, dict]:
    return {span["spanID"]: span for span in trace["spans"]}


def tags_of(span_or_log: dict) -> dict[str, tuple[str, Any]]:
    """`{key: (type, value)}` of a span's tags or a log's fields."""
    items = span_or_log.get("tags", span_or_log.get("fields"))
    tags = {}
    for tag in items:
        assert tag["key"] not in tags, f"duplicate tag {tag['key']!r}"
        tags[tag["key"]] = (tag["type"], tag["value"])
    return tags


def parent_of(span: dict) -> str | None:
    """The span id of the CHILD_OF reference in the same trace, if any."""
    parents = [
        ref["spanID"]
        for ref in span["references"]
        if ref["refType"] == "CHILD_OF" and ref["traceID"] == span["traceID"]
    ]
    assert len(parents) <= 1, span["references"]
    return parents[0] if parents else None


# --- the OpenTelemetry SDK ---------------------------------------------------------------


@dataclass
class SdkPipeline:
    """A TracerProvider exporting with a BatchSpanProcessor, recording in memory too."""

    provider: TracerProvider
    recorded: InMemorySpanExporter

    def tracer(self, name: str = "caracal-e2e", version: str = "1.0.0"):
        return self.provider.get_tracer(name, version)

    def flush(self, timeout_ms: int = 60_000) -> None:
        assert self.provider.force_flush(timeout_ms), "force_flush timed out"

    def finished(self) -> tuple[ReadableSpan, ...]:
        return self.recorded.get_finished_spans()

    def shutdown(self) -> None:
        self.provider.shutdown()


def sdk_exporter(caracal, protocol: str):
    """An OTLP span exporter for `protocol` ("grpc" or "http") pointed at `caracal`."""
    if protocol == "grpc":
        return GrpcSpanExporter(endpoint=f"http://{caracal.otlp_grpc_addr}", insecure=True)
    if protocol == "http":
        return HttpSpanExporter(endpoint=caracal.otlp_http_url)
    raise ValueError(protocol)


def sdk_pipeline(
    caracal,
    service: str,
    protocol: str = "grpc",
    resource: dict[str, str] | None = None,
    **batch_options: int,
) -> SdkPipeline:
    """A real SDK pipeline for `service`, with more `resource` attributes if given;
    `batch_options` go to BatchSpanProcessor."""
    attributes = {"service.name": service} | (resource or {})
    provider = TracerProvider(resource=Resource.create(attributes))
    provider.add_span_processor(
        BatchSpanProcessor(sdk_exporter(caracal, protocol), **batch_options)
    )
    recorded = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(recorded))
    return SdkPipeline(provider, recorded)


# --- raw OTLP --------------------------------------------------------------------------


def new_span(
    name: str, trace_id: bytes | None = None, span_id: bytes | None = None, **fields
) -> Span:
    """A protobuf span (by default: a server span of 5 ms that started 1 s ago, with
    random ids); `fields` set or override any Span field."""
    start = fields.get("start_time_unix_nano", now_ns() - 1_000 * MS_NS)
    defaults = {
        "kind": Span.SPAN_KIND_SERVER,
        "start_time_unix_nano": start,
        "end_time_unix_nano": start + 5 * MS_NS,
    }
    return Span(
        trace_id=os.urandom(16) if trace_id is None else trace_id,
        span_id=os.urandom(8) if span_id is None else span_id,
        name=name,
        **(defaults | fields),
    )


def string_attribute(key: str, value: str) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(string_value=value))


def export_request(*spans: Span, service: str) -> bytes:
    """A serialized ExportTraceServiceRequest holding `spans` of `service`."""
    resource = ProtoResource(attributes=[string_attribute("service.name", service)])
    request = trace_service_pb2.ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(resource=resource, scope_spans=[ScopeSpans(spans=spans)])]
    )
    return request.SerializeToString()


def send(caracal, transport: str, body: bytes) -> trace_service_pb2.ExportTraceServiceResponse:
    """Exports `body` over `transport` ("http" or "grpc"); returns the response."""
    if transport == "grpc":
        return export_response(grpc_export(caracal, body))
    response = http_export(caracal, body)
    assert response.status_code == 200, response.content
    assert response.headers["Content-Type"] == "application/x-protobuf"
    return export_response(response.content)


def grpc_export(caracal, body: bytes, **call_options: Any) -> bytes:
    """Sends raw bytes as an OTLP/gRPC Export call; returns the raw response bytes."""
    with grpc.insecure_channel(caracal.otlp_grpc_addr) as channel:
        export = channel.unary_unary(
            EXPORT_PATH, request_serializer=None, response_deserializer=None
        )
        return export(body, timeout=30, **call_options)


def http_export(
    caracal,
    body: bytes,
    content_type: str = "application/x-protobuf",
    headers: dict[str, str] | None = None,
) -> requests.Response:
    """POSTs `body` to OTLP/HTTP; returns the response."""
    headers = {"Content-Type": content_type, **(headers or {})}
    return requests.post(caracal.otlp_http_url, data=body, headers=headers, timeout=60)


def export_response(body: bytes) -> trace_service_pb2.ExportTraceServiceResponse:
    return trace_service_pb2.ExportTraceServiceResponse.FromString(body)
