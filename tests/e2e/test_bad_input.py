"""Bad input over OTLP/HTTP and OTLP/gRPC: each request is refused (or partly accepted)
with the right status, good spans survive next to bad ones, and the server keeps serving.

Requests are built with the `opentelemetry.proto` classes that come with the exporter.
"""

from __future__ import annotations

import gzip
import json
import os

import grpc
import pytest
from google.rpc import status_pb2
from opentelemetry.proto.trace.v1.trace_pb2 import Span

import helpers
from helpers import (
    MS_NS,
    grpc_export,
    http_export,
    new_span,
    now_ns,
    send,
    string_attribute,
    tags_of,
    wait_until,
)

SERVICE = "e2e-bad-input"
LIMIT = 16 * 1024 * 1024
GRPC_INVALID_ARGUMENT = 3
GRPC_RESOURCE_EXHAUSTED = 8
GARBAGE = b"\x0a\x10too short for its length prefix"
INVALID_UTF8_MARKER = b"@@BAD@@"
INVALID_UTF8_BYTES = b"@@\xff\xfe\xfd@@"  # same length, three invalid bytes
REPAIRED_TEXT = "@@\ufffd\ufffd\ufffd@@"


def export_request(*spans) -> bytes:
    return helpers.export_request(*spans, service=SERVICE)


def rpc_status(response) -> status_pb2.Status:
    assert response.headers["Content-Type"] == "application/x-protobuf", response.headers
    return status_pb2.Status.FromString(response.content)


def stored_span(caracal, span: Span) -> dict:
    """The API's view of `span`, which must be the only span of its trace."""
    trace = wait_until(lambda: caracal.api.trace(span.trace_id.hex()), timeout=3)
    (stored,) = trace["spans"]
    assert stored["spanID"] == span.span_id.hex()
    return stored


def assert_serving(caracal) -> None:
    """The server is healthy and still stores spans over both transports."""
    assert caracal.api.healthy()
    for transport in ("http", "grpc"):
        span = new_span(f"still serving over {transport}")
        assert not send(caracal, transport, export_request(span)).HasField("partial_success")
        assert stored_span(caracal, span)["operationName"] == span.name


# --- OTLP/HTTP -------------------------------------------------------------------------


def test_http_garbage_protobuf_is_400(caracal):
    response = http_export(caracal, GARBAGE)
    assert response.status_code == 400
    status = rpc_status(response)
    assert status.code == GRPC_INVALID_ARGUMENT
    assert "protobuf" in status.message


def test_http_invalid_json_is_400(caracal):
    response = http_export(caracal, b'{"resourceSpans": [', content_type="application/json")
    assert response.status_code == 400
    assert response.json()["code"] == GRPC_INVALID_ARGUMENT


@pytest.mark.parametrize(
    "content_type, headers",
    [
        ("text/plain", {}),
        ("", {}),
        ("application/x-protobuf", {"Content-Encoding": "br"}),
    ],
    ids=["text-plain", "no-content-type", "unknown-encoding"],
)
def test_http_unsupported_media_is_415(caracal, content_type, headers):
    response = http_export(caracal, export_request(new_span("415")), content_type, headers)
    assert response.status_code == 415, response.content


def test_http_body_over_limit_is_413(caracal):
    response = http_export(caracal, b"\0" * (LIMIT + 1))
    assert response.status_code == 413
    assert_serving(caracal)


def test_http_gzip_bomb_is_413(caracal):
    bomb = gzip.compress(b"\0" * (LIMIT + 1024), compresslevel=9)
    assert len(bomb) < 64 * 1024
    response = http_export(caracal, bomb, headers={"Content-Encoding": "gzip"})
    assert response.status_code == 413
    assert_serving(caracal)


@pytest.mark.parametrize(
    "encoding",
    ["identity", "gzip"],
)
def test_http_413_body_is_rpc_status(caracal, encoding):
    body = b"\0" * (LIMIT + 1)
    if encoding == "gzip":
        body = gzip.compress(body)
    response = http_export(caracal, body, headers={"Content-Encoding": encoding})
    assert response.status_code == 413
    # OTLP/HTTP: every 4xx/5xx body is a google.rpc.Status in the request's encoding.
    assert rpc_status(response).code == GRPC_RESOURCE_EXHAUSTED


def test_http_gzip_body_is_accepted(caracal):
    span = new_span("gzip over http")
    body = gzip.compress(export_request(span))
    response = http_export(caracal, body, headers={"Content-Encoding": "gzip"})
    assert response.status_code == 200, response.content
    assert stored_span(caracal, span)["operationName"] == span.name


def test_http_corrupt_gzip_is_400(caracal):
    body = gzip.compress(export_request(new_span("corrupt gzip")))[:-12] + b"\0" * 12
    response = http_export(caracal, body, headers={"Content-Encoding": "gzip"})
    assert response.status_code == 400, response.content


def test_http_json_export_is_stored(caracal):
    span = new_span("json over http")
    body = {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": SERVICE}}]
                },
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": span.trace_id.hex(),
                                "spanId": span.span_id.hex(),
                                "name": span.name,
                                "kind": 2,
                                "startTimeUnixNano": str(span.start_time_unix_nano),
                                "endTimeUnixNano": str(span.end_time_unix_nano),
                                "attributes": [
                                    {"key": "e2e.count", "value": {"intValue": "42"}},
                                    {"key": "e2e.ok", "value": {"boolValue": True}},
                                ],
                                "status": {"code": 2, "message": "boom"},
                            }
                        ]
                    }
                ],
            }
        ]
    }
    response = http_export(caracal, json.dumps(body).encode(), content_type="application/json")
    assert response.status_code == 200, response.content
    assert response.headers["Content-Type"] == "application/json"
    stored = stored_span(caracal, span)
    assert stored["duration"] == 5_000
    tags = tags_of(stored)
    assert tags["e2e.count"] == ("int64", 42)
    assert tags["e2e.ok"] == ("bool", True)
    assert tags["span.kind"] == ("string", "server")
    assert tags["error"] == ("bool", True)


def test_http_json_malformed_span_is_refused_and_its_neighbours_kept(caracal):
    """One span the OTLP JSON mapping cannot read (a non-hex trace id) costs only itself."""
    good = [new_span("json neighbour 1"), new_span("json neighbour 2")]

    def span_json(span, trace_id=None):
        return {
            "traceId": trace_id or span.trace_id.hex(),
            "spanId": span.span_id.hex(),
            "name": span.name,
            "startTimeUnixNano": str(span.start_time_unix_nano),
            "endTimeUnixNano": str(span.end_time_unix_nano),
        }

    bad = span_json(new_span("json bad id"), trace_id="zz" * 16)
    body = {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": SERVICE}}]
                },
                "scopeSpans": [{"spans": [span_json(good[0]), bad, span_json(good[1])]}],
            }
        ]
    }
    response = http_export(caracal, json.dumps(body).encode(), content_type="application/json")
    assert response.status_code == 200, response.content
    partial = response.json()["partialSuccess"]
    assert int(partial["rejectedSpans"]) == 1, partial
    assert "1 malformed_span" in partial["errorMessage"], partial
    assert "resourceSpans[0].scopeSpans[0].spans[1]" in partial["errorMessage"], partial
    for span in good:
        assert stored_span(caracal, span)["operationName"] == span.name


# --- both transports -------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_invalid_spans_are_rejected_and_good_ones_kept(caracal, transport):
    good = new_span(f"good span over {transport}")
    day_ns = 86_400 * 1_000 * MS_NS
    bad = [
        new_span("zero trace id", trace_id=bytes(16)),
        new_span("short span id", trace_id=good.trace_id, span_id=os.urandom(7)),
        new_span(
            "before 2000", trace_id=good.trace_id, start_time_unix_nano=946_684_799 * 1_000 * MS_NS
        ),
        new_span(
            "two days ahead", trace_id=good.trace_id, start_time_unix_nano=now_ns() + 2 * day_ns
        ),
    ]
    response = send(caracal, transport, export_request(bad[0], good, *bad[1:]))
    assert response.partial_success.rejected_spans == len(bad)
    message = response.partial_success.error_message
    for reason in ("invalid_trace_id", "invalid_span_id", "timestamp_out_of_range"):
        assert reason in message, message
    assert stored_span(caracal, good)["operationName"] == good.name


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_request_with_only_invalid_spans_is_answered(caracal, transport):
    response = send(caracal, transport, export_request(new_span("zero span id", span_id=bytes(8))))
    assert response.partial_success.rejected_spans == 1
    assert "invalid_span_id" in response.partial_success.error_message


def test_span_ending_before_it_starts_is_kept_with_zero_duration(caracal):
    span = new_span("backwards")
    span.end_time_unix_nano = span.start_time_unix_nano - MS_NS
    response = send(caracal, "http", export_request(span))
    assert response.partial_success.rejected_spans == 0
    assert "ended before they started" in response.partial_success.error_message
    assert stored_span(caracal, span)["duration"] == 0


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_invalid_utf8_is_repaired_and_kept(caracal, transport):
    marker = INVALID_UTF8_MARKER.decode()
    span = new_span(
        f"utf8 {transport} {marker}",
        attributes=[string_attribute("e2e.text", marker), string_attribute("e2e.clean", "ok")],
    )
    body = export_request(span)
    assert body.count(INVALID_UTF8_MARKER) == 2
    response = send(caracal, transport, body.replace(INVALID_UTF8_MARKER, INVALID_UTF8_BYTES))
    assert response.partial_success.rejected_spans == 0
    assert "invalid UTF-8" in response.partial_success.error_message
    stored = stored_span(caracal, span)
    assert stored["operationName"] == f"utf8 {transport} {REPAIRED_TEXT}"
    tags = tags_of(stored)
    assert tags["e2e.text"] == ("string", REPAIRED_TEXT)
    assert tags["e2e.clean"] == ("string", "ok")


def test_oversized_attributes_are_truncated_and_extra_ones_dropped(caracal):
    # Defaults: 16 KiB per value, 256 bytes per key, 128 attributes per span.
    attributes = [string_attribute("e2e.big", "x" * 20_000), string_attribute("k" * 300, "v")]
    attributes += [string_attribute(f"e2e.extra.{index}", "1") for index in range(140)]
    span = new_span("oversized attributes", attributes=attributes)
    response = send(caracal, "http", export_request(span))
    assert response.partial_success.rejected_spans == 0
    message = response.partial_success.error_message
    assert "2 attribute keys or values over the length limit were truncated" in message, message
    assert "14 attributes over the per-span limit were dropped" in message, message
    tags = tags_of(stored_span(caracal, span))
    assert tags["e2e.big"] == ("string", "x" * 16_384 + "…[truncated]")
    assert "k" * 256 + "…[truncated]" in tags
    assert sum(key.startswith("e2e.extra.") for key in tags) == 126


# --- OTLP/gRPC -------------------------------------------------------------------------


def test_grpc_garbage_is_invalid_argument(caracal):
    with pytest.raises(grpc.RpcError) as error:
        grpc_export(caracal, GARBAGE)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "protobuf" in error.value.details()
    assert_serving(caracal)


def test_grpc_gzip_is_accepted(caracal):
    span = new_span("gzip over grpc")
    grpc_export(caracal, export_request(span), compression=grpc.Compression.Gzip)
    assert stored_span(caracal, span)["operationName"] == span.name


@pytest.mark.parametrize(
    "compression",
    [
        pytest.param(grpc.Compression.NoCompression, id="plain"),
        pytest.param(grpc.Compression.Gzip, id="gzip"),
    ],
)
def test_grpc_message_over_limit_is_resource_exhausted(caracal, compression):
    body = export_request(new_span("too big", attributes=[string_attribute("pad", "x" * LIMIT)]))
    with pytest.raises(grpc.RpcError) as error:
        grpc_export(caracal, body, compression=compression)
    assert_serving(caracal)
    # OTLP clients always retry OUT_OF_RANGE, which can never succeed here; the
    # collector maps "too large" to RESOURCE_EXHAUSTED (no RetryInfo) everywhere else.
    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error.value


def test_unknown_grpc_method_is_unimplemented(caracal):
    with grpc.insecure_channel(caracal.otlp_grpc_addr) as channel:
        call = channel.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Nope")
        with pytest.raises(grpc.RpcError) as error:
            call(b"", timeout=10)
    assert error.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_server_is_healthy_after_all_that(caracal):
    caracal.assert_running()
    assert_serving(caracal)


@pytest.mark.parametrize(
    ("path", "params", "message"),
    [
        ("/api/v1/metrics", {"start": 0, "end": 1}, "'service' is required"),
        ("/api/v1/metrics", {"service": "s"}, "'start' and 'end'"),
        ("/api/v1/metrics", {"service": "s", "start": 5, "end": 5}, "'start' must be before"),
        ("/api/v1/metrics", {"service": "s", "start": "yesterday", "end": 1}, "start"),
        ("/api/v1/metrics", {"service": "s", "start": -1, "end": 1}, "start"),
        ("/api/v1/metrics", {"service": "s", "start": 0, "end": 1, "step": 15}, "multiple of 10"),
        (
            "/api/v1/metrics",
            {"service": "s", "instance": "i", "start": 0, "end": 1, "step": 30},
            "multiple of 60 seconds with 'instance'",
        ),
        ("/api/v1/metrics", {"service": "s", "start": 0, "end": 1, "spanKind": "x"}, "spanKind"),
        ("/api/v1/instances", {}, "'service' is required"),
        ("/api/v1/instances", {"service": "s", "start": 9, "end": 9}, "'start' must be before"),
        ("/api/v1/instances", {"service": "s", "end": "soon"}, "end"),
    ],
)
def test_bad_query_parameters_are_400_with_the_reason(caracal, path, params, message):
    body = caracal.api.get(path, params, status=400)
    assert body["errors"][0]["code"] == 400, body
    assert message in body["errors"][0]["msg"], body


def test_absurd_query_windows_are_answered(caracal):
    """Windows at the ends of the time range are clamped, not refused or crashed on."""
    huge = 2**64 - 1
    for path, params in (
        ("/api/v1/metrics", {"service": "s", "instance": "i", "start": 0, "end": huge, "step": 60}),
        ("/api/v1/metrics", {"service": "s", "start": huge - 1, "end": huge, "step": 10}),
        ("/api/v1/instances", {"service": "s", "start": 0, "end": huge}),
        ("/api/v1/instances", {"service": "s", "start": huge - 1, "end": huge}),
    ):
        body = caracal.api.get(path, params)
        if path == "/api/v1/metrics":
            assert body["total"]["count"] == 0, body
        else:
            assert body == {"instances": []}, body
