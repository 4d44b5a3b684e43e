"""Tenancy through the real binary: ingest tokens (HTTP `Authorization: Bearer`, gRPC
`authorization` metadata) map requests to tenants, query tokens confine every query API
to the caller's tenant, missing or unknown tokens are refused, and no token ever shows
in the server's log.

Two tenants send the same service, operation names and even the same trace id; each
sees only its own.
"""

from __future__ import annotations

import time

import grpc
import pytest
import requests
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcSpanExporter,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpSpanExporter,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind

from conftest import database_name, fresh_database, start_caracal
from helpers import MS_NS, export_request, grpc_export, new_span, now_ns, wait_until

INGEST = {"team-a": "ingest-a-7f3k2", "team-b": "ingest-b-9q8w1"}
QUERY = {"team-a": "query-a-5m2n8", "team-b": "query-b-3x7c4"}
SERVICE = "shop"
SHARED_TRACE = bytes.fromhex("5eed" * 8)


@pytest.fixture(scope="module")
def tenanted(clickhouse_url, tmp_path_factory):
    with fresh_database(database_name("tenancy")) as database:
        log_path = tmp_path_factory.mktemp("caracal") / "tenancy.log"
        server = start_caracal(
            database,
            log_path,
            clickhouse_url,
            extra_env={
                "CARACAL_INGEST_TOKENS": ",".join(f"{t}={n}" for n, t in INGEST.items()),
                "CARACAL_QUERY_TOKENS": ",".join(f"{t}={n}" for n, t in QUERY.items()),
                # Debug logs too must not carry a token.
                "CARACAL_LOG": "debug,h2=info,hyper=info,tower=info",
            },
        )
        try:
            yield server
            server.stop_cleanly()
        finally:
            server.stop()


def api_get(caracal, path: str, tenant: str | None, params=None) -> requests.Response:
    headers = {"Authorization": f"Bearer {QUERY[tenant]}"} if tenant else {}
    return requests.get(
        f"http://{caracal.http_addr}{path}", params=params, headers=headers, timeout=30
    )


def data(caracal, path: str, tenant: str, params=None):
    response = api_get(caracal, path, tenant, params)
    assert response.status_code == 200, response.text
    return response.json()["data"]


def send_sdk_spans(caracal, tenant: str, protocol: str, operation: str) -> None:
    """A server span and a client child of `tenant`, through the real SDK exporter."""
    if protocol == "grpc":
        exporter = GrpcSpanExporter(
            endpoint=f"http://{caracal.otlp_grpc_addr}",
            insecure=True,
            headers={"authorization": f"Bearer {INGEST[tenant]}"},
        )
    else:
        exporter = HttpSpanExporter(
            endpoint=caracal.otlp_http_url,
            headers={"Authorization": f"Bearer {INGEST[tenant]}"},
        )
    provider = TracerProvider(resource=Resource.create({"service.name": SERVICE}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("tenancy")
    with tracer.start_as_current_span(operation, kind=SpanKind.SERVER):
        with tracer.start_as_current_span(f"{operation} db", kind=SpanKind.CLIENT):
            pass
    provider.shutdown()


def test_each_tenant_sees_only_its_own_data(tenanted):
    send_sdk_spans(tenanted, "team-a", "grpc", "GET /a-only")
    send_sdk_spans(tenanted, "team-b", "http", "GET /b-only")
    # The same trace id for both tenants, with different span names.
    start = now_ns() - 2_000 * MS_NS
    for tenant, name in (("team-a", "shared-a"), ("team-b", "shared-b")):
        body = export_request(
            new_span(name, trace_id=SHARED_TRACE, start_time_unix_nano=start), service=SERVICE
        )
        grpc_export(tenanted, body, metadata=(("authorization", f"Bearer {INGEST[tenant]}"),))

    for tenant, own, other in (("team-a", "a", "b"), ("team-b", "b", "a")):
        operations = wait_until(
            lambda tenant=tenant, own=own: (
                lambda found: found if f"GET /{own}-only" in found else None
            )(set(data(tenanted, f"/api/services/{SERVICE}/operations", tenant))),
            timeout=30,
        )
        assert f"GET /{other}-only" not in operations
        assert f"shared-{other}" not in operations
        assert data(tenanted, "/api/services", tenant) == [SERVICE]

        traces = data(tenanted, "/api/traces", tenant, {"service": SERVICE, "lookback": "1h"})
        names = {span["operationName"] for trace in traces for span in trace["spans"]}
        assert f"GET /{own}-only" in names and f"shared-{own}" in names
        assert not names & {f"GET /{other}-only", f"GET /{other}-only db", f"shared-{other}"}

        shared = data(tenanted, f"/api/traces/{SHARED_TRACE.hex()}", tenant)
        assert [span["operationName"] for span in shared[0]["spans"]] == [f"shared-{own}"]

        end_ms = int(time.time() * 1000) // 10_000 * 10_000 + 10_000
        # Each tenant sent 3 spans (server, client, shared); the other's never count.
        wait_until(
            lambda tenant=tenant: api_get(
                tenanted,
                "/api/v1/metrics",
                tenant,
                {"service": SERVICE, "start": end_ms - 3_600_000, "end": end_ms, "step": 3600},
            ).json()["total"]["count"]
            == 3,
            timeout=30,
        )
        # The SDK names its process with a random service.instance.id: each tenant sees
        # its own process (server and client span), never the other's. The per-instance
        # tables fill in the same insert as the service's, a moment later.
        def one_instance_with_its_two_spans(tenant=tenant):
            instances = api_get(
                tenanted, "/api/v1/instances", tenant, {"service": SERVICE, "end": end_ms}
            ).json()["instances"]
            assert [instance["count"] for instance in instances] == [2], instances
            return True

        wait_until(one_instance_with_its_two_spans, timeout=30)


def test_missing_or_unknown_tokens_are_refused(tenanted):
    body = export_request(new_span("nobody"), service="intruder")
    for metadata in ((), (("authorization", "Bearer not-a-token"),)):
        with pytest.raises(grpc.RpcError) as refused:
            grpc_export(tenanted, body, metadata=metadata)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    for headers in ({}, {"Authorization": "Bearer not-a-token"}, {"Authorization": "Basic eA=="}):
        http = requests.post(
            tenanted.otlp_http_url,
            data=body,
            headers={"Content-Type": "application/x-protobuf", **headers},
            timeout=30,
        )
        assert http.status_code == 401, http.text
        zipkin = requests.post(tenanted.zipkin_url, json=[], headers=headers, timeout=30)
        assert zipkin.status_code == 401, zipkin.text
    # A query token is not an ingest token, nor the other way round.
    wrong_kind = requests.post(
        tenanted.otlp_http_url,
        data=body,
        headers={
            "Content-Type": "application/x-protobuf",
            "Authorization": f"Bearer {QUERY['team-a']}",
        },
        timeout=30,
    )
    assert wrong_kind.status_code == 401
    for path in (
        "/api/services",
        "/api/traces?service=shop",
        "/api/dependencies?endTs=1&lookback=1",
        "/api/v1/instances?service=shop",
    ):
        assert api_get(tenanted, path, None).status_code == 401
        response = requests.get(
            f"http://{tenanted.http_addr}{path}",
            headers={"Authorization": f"Bearer {INGEST['team-a']}"},
            timeout=30,
        )
        assert response.status_code == 401, path
        assert response.json()["errors"][0]["code"] == 401
    # Health and self-monitoring stay open: they hold no tenant's data.
    assert requests.get(f"http://{tenanted.http_addr}/healthz", timeout=30).status_code == 200
    assert requests.get(f"http://{tenanted.http_addr}/metrics", timeout=30).status_code == 200
    assert (
        data(tenanted, "/api/services", "team-a") == []
        or "intruder" not in data(tenanted, "/api/services", "team-a")
    )


def test_tokens_never_appear_in_the_log(tenanted):
    # Make sure the log holds the earlier tests' requests, refusals included.
    text = tenanted.log_path.read_text(errors="replace")
    assert "DEBUG" in text, "the server did not log at debug level"
    for token in [*INGEST.values(), *QUERY.values()]:
        assert token not in text


def test_without_tokens_remote_listening_is_refused(clickhouse_url, tmp_path):
    with fresh_database(database_name("tenancy_open")) as database:
        with pytest.raises(AssertionError) as refused:
            start_caracal(
                database,
                tmp_path / "open.log",
                clickhouse_url,
                extra_env={"CARACAL_OTLP_HTTP_ADDR": "0.0.0.0:0"},
            )
        assert "without tokens" in (tmp_path / "open.log").read_text(), refused.value
