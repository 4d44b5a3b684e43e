"""Self-monitoring of the real binary: `caracal up` serves the collector's metrics as
`GET /metrics` on CARACAL_HTTP_ADDR (and on the OTLP/HTTP address), in the Prometheus
text format, and they count what the receivers saw and the writer stored.
"""

from __future__ import annotations

import json

import requests

from helpers import export_request, fixtures_dir, new_span, scrape, send

SERVICE = "e2e-self-metrics"


def test_every_metric_is_prefixed_and_typed(caracal):
    response = requests.get(f"http://{caracal.http_addr}/metrics", timeout=10)
    families = {
        line.split()[2]: line.split()[3]
        for line in response.text.splitlines()
        if line.startswith("# TYPE ")
    }
    expected = {
        "caracal_received_spans": "counter",
        "caracal_accepted_spans": "counter",
        "caracal_rejected_spans": "counter",
        "caracal_received_requests": "counter",
        "caracal_refused_requests": "counter",
        "caracal_clickhouse_insert_errors": "counter",
        "caracal_inserted_rows": "counter",
        "caracal_insert_duration_seconds": "histogram",
        "caracal_batch_size_rows": "histogram",
        "caracal_writer_queue_depth_requests": "gauge",
        "caracal_inserts_in_flight": "gauge",
        "caracal_spooled_spans": "counter",
        "caracal_replayed_spans": "counter",
        "caracal_spool_errors": "counter",
        "caracal_spool_bytes": "gauge",
        "caracal_spool_batches": "gauge",
        "caracal_repaired": "counter",
        "caracal_agent_rejected_rows": "counter",
    }
    # Refusals are labelled by receiver and reason; the family shows from the first one.
    families.setdefault("caracal_refused_requests", "counter")
    assert families == expected


def test_counters_follow_the_traffic(caracal):
    before = scrape(caracal.http_addr)

    good = [new_span(f"metered {index}") for index in range(3)]
    zero_trace = new_span("zero trace id", trace_id=bytes(16))
    response = send(caracal, "http", export_request(*good, zero_trace, service=SERVICE))
    assert response.partial_success.rejected_spans == 1
    send(caracal, "grpc", export_request(new_span("over grpc"), service=SERVICE))
    fixture = (fixtures_dir() / "zipkin-v2" / "simple-db-p6.json").read_bytes()
    zipkin = requests.post(
        caracal.zipkin_url,
        data=fixture,
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert zipkin.status_code == 202, zipkin.text
    num_zipkin = len(json.loads(fixture))
    garbage = requests.post(
        caracal.otlp_http_url,
        data=b"\x0a\x10too short",
        headers={"Content-Type": "application/x-protobuf"},
        timeout=30,
    )
    assert garbage.status_code == 400

    after = scrape(caracal.http_addr)

    def delta(series: str) -> float:
        return after[series] - before.get(series, 0.0)

    num_stored = 3 + 1 + num_zipkin
    assert delta('caracal_received_requests_total{receiver="otlp_http"}') == 2
    assert delta('caracal_received_requests_total{receiver="otlp_grpc"}') == 1
    assert delta('caracal_received_requests_total{receiver="zipkin"}') == 1
    assert delta('caracal_refused_requests_total{receiver="otlp_http",reason="malformed"}') == 1
    assert delta("caracal_received_spans_total") == num_stored + 1
    assert delta("caracal_accepted_spans_total") == num_stored
    assert delta('caracal_rejected_spans_total{reason="invalid_trace_id"}') == 1
    assert delta('caracal_rejected_spans_total{reason="invalid_span_id"}') == 0
    assert delta("caracal_inserted_rows_total") == num_stored
    assert delta("caracal_batch_size_rows_sum") == num_stored
    assert 1 <= delta("caracal_batch_size_rows_count") <= 3
    assert delta("caracal_insert_duration_seconds_count") == delta("caracal_batch_size_rows_count")
    assert after['caracal_clickhouse_insert_errors_total{table="spans"}'] == 0
    assert after["caracal_writer_queue_depth_requests"] == 0
    assert after["caracal_inserts_in_flight"] == 0

    # The collector's own address serves the same registry.
    on_collector = scrape(caracal.otlp_http_addr)
    assert on_collector["caracal_accepted_spans_total"] == after["caracal_accepted_spans_total"]
