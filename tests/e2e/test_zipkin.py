"""The Zipkin v2 receiver of the real binary (CARACAL_ZIPKIN_ADDR): the shared fixtures
(`zipkin-v2/*.json`) go in as Zipkin reporters send them and come out of the query API
with their trees and services; bad spans and bad bodies are refused as documented.
"""

from __future__ import annotations

import gzip
import json

import pytest
import requests

from helpers import fixtures_dir, parent_of, tags_of, wait_until

FIXTURES = sorted((fixtures_dir() / "zipkin-v2").glob("*.json"))


def post_zipkin(caracal, body: bytes, **headers: str) -> requests.Response:
    headers = {"Content-Type": "application/json", **headers}
    return requests.post(caracal.zipkin_url, data=body, headers=headers, timeout=60)


def padded(span_id: str, width: int) -> str:
    return span_id.lower().rjust(width, "0")


def expected_spans(spans: list[dict]) -> dict[str, list[tuple]]:
    """(span id, parent, service, name, start µs, duration µs) of every span, by trace."""
    by_trace: dict[str, list[tuple]] = {}
    for span in spans:
        span_id = padded(span["id"], 16)
        parent = padded(span["parentId"], 16) if span.get("parentId") else None
        service = span.get("localEndpoint", {}).get("serviceName") or "unknown_service"
        facts = (
            span_id,
            None if parent == span_id else parent,
            service,
            span.get("name", ""),
            span["timestamp"],
            span.get("duration", 0),
        )
        by_trace.setdefault(padded(span["traceId"], 32), []).append(facts)
    return {trace_id: sorted(facts) for trace_id, facts in by_trace.items()}


def stored_spans(trace: dict) -> list[tuple]:
    services = {key: process["serviceName"] for key, process in trace["processes"].items()}
    return sorted(
        (
            span["spanID"],
            parent_of(span),
            services[span["processID"]],
            span["operationName"],
            span["startTime"],
            span["duration"],
        )
        for span in trace["spans"]
    )


def test_fixtures_are_present():
    assert len(FIXTURES) >= 8, f"zipkin fixtures missing in {fixtures_dir()}"


@pytest.mark.parametrize("fixture", FIXTURES, ids=lambda path: path.stem)
def test_fixture_round_trip(caracal, fixture):
    spans = json.loads(fixture.read_bytes())
    response = post_zipkin(caracal, fixture.read_bytes())
    assert response.status_code == 202, response.text
    assert response.json() == {"accepted": len(spans), "rejected": 0, "message": ""}
    for trace_id, expected in expected_spans(spans).items():
        trace = wait_until(lambda: caracal.api.trace(trace_id), timeout=5)
        assert stored_spans(trace) == expected


def test_gzip_body_and_peer_service(caracal):
    body = (fixtures_dir() / "zipkin-v2" / "simple-db-p6.json").read_bytes()
    response = post_zipkin(caracal, gzip.compress(body), **{"Content-Encoding": "gzip"})
    assert response.status_code == 202, response.text
    trace = caracal.api.trace("000000000000000019f84f102048e047")
    clients = [span for span in trace["spans"] if tags_of(span)["span.kind"][1] == "client"]
    assert clients, trace
    for span in clients:
        assert tags_of(span)["peer.service"] == ("string", "app_db")


def test_bad_spans_are_refused_one_by_one(caracal):
    good = {
        "traceId": "e2e0000000000001",
        "id": "1",
        "name": "good",
        "timestamp": 1_700_000_000_000_000,
        "duration": 7,
        "localEndpoint": {"serviceName": "e2e-zipkin"},
    }
    bad_id = {**good, "id": "not hex"}
    response = post_zipkin(caracal, json.dumps([good, bad_id, "not a span"]).encode())
    assert response.status_code == 202, response.text
    body = response.json()
    assert (body["accepted"], body["rejected"]) == (1, 2)
    assert body["message"].startswith(
        "rejected 2 spans: 1 malformed_span 1 invalid_span_id; first malformed span: span 2:"
    ), body
    trace = caracal.api.trace("0000000000000000e2e0000000000001")
    assert [span["spanID"] for span in trace["spans"]] == ["0000000000000001"]


@pytest.mark.parametrize(
    ("body", "headers", "status"),
    [
        (b'[{"traceId": ', {}, 400),
        (b'{"spans": []}', {}, 400),
        (b"\x0a\x01", {"Content-Type": "application/x-protobuf"}, 415),
        (b"[]", {"Content-Encoding": "br"}, 415),
        (b" " * (16 * 1024 * 1024 + 1), {}, 413),
    ],
    ids=["truncated", "not-an-array", "protobuf", "brotli", "too-large"],
)
def test_bad_bodies_get_json_errors(caracal, body, headers, status):
    response = post_zipkin(caracal, body, **headers)
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/json"
    assert response.json()["message"], response.text
