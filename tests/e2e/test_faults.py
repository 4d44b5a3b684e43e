"""Fault tests of the real binary under steady load from the Python OpenTelemetry SDK.

ClickHouse here is a private instance (deploy/clickhouse.sh with a folder and ports of
this module's), so stopping it does not disturb other suites:

- ClickHouse stopped for CARACAL_FAULT_OUTAGE_SECS (default 60 s) and started again:
  every span the collector acknowledged is in ClickHouse exactly once.
- The collector killed with SIGKILL mid-load (with ClickHouse up, then with ClickHouse
  down so the spool holds batches) and restarted on the same ports and spool: every
  span acknowledged before a kill is present exactly once.
- Spool full while ClickHouse is down: clients get the retryable error (gRPC
  RESOURCE_EXHAUSTED with RetryInfo, HTTP 429 with Retry-After) and the collector's
  RSS stays under its bound.

"Acknowledged" is what the SDK's exporter reported as exported: a wrapper around the
real OTLP exporter records the span ids of every batch whose export succeeded.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import requests
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.trace import SpanKind

from conftest import REPO_ROOT, Caracal, free_addr, start_caracal
from helpers import export_request, grpc_export, new_span, scrape, wait_until

OUTAGE_SECS = float(os.environ.get("CARACAL_FAULT_OUTAGE_SECS", "60"))
SERVICE = "e2e-faults"
SPANS_PER_SECOND = 400


@dataclass
class PrivateClickHouse:
    """A ClickHouse of this module's, started and stopped through deploy/clickhouse.sh."""

    folder: Path
    http_port: int
    tcp_port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def _script(self, action: str) -> None:
        env = {
            **os.environ,
            "CARACAL_CH_DIR": str(self.folder),
            "CH_HTTP_PORT": str(self.http_port),
            "CH_TCP_PORT": str(self.tcp_port),
        }
        subprocess.run(
            ["bash", REPO_ROOT / "deploy" / "clickhouse.sh", action], env=env, check=True
        )

    def start(self) -> None:
        self._script("start")

    def stop(self) -> None:
        self._script("stop")

    def sql(self, statement: str) -> str:
        response = requests.post(self.url + "/", data=statement.encode(), timeout=60)
        assert response.status_code == 200, f"{statement}: {response.text}"
        return response.text


def port_of(addr: str) -> int:
    return int(addr.rsplit(":", 1)[1])


@pytest.fixture(scope="module")
def private_clickhouse(tmp_path_factory) -> PrivateClickHouse:
    server = PrivateClickHouse(
        folder=tmp_path_factory.mktemp("clickhouse"),
        http_port=port_of(free_addr()),
        tcp_port=port_of(free_addr()),
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def fault_database(request, private_clickhouse):
    """A fresh database on the private server, named after the test."""
    name = f"faults_{request.node.name.replace('test_', '')}_{os.getpid()}"
    private_clickhouse.sql(f"DROP DATABASE IF EXISTS {name}")
    yield name
    private_clickhouse.sql(f"DROP DATABASE IF EXISTS {name}")


class AcknowledgedSpans(SpanExporter):
    """Wraps the real exporter; records the ids of spans whose export succeeded."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner
        self.lock = threading.Lock()
        self.acknowledged: set[str] = set()
        self.failed = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result = self.inner.export(spans)
        with self.lock:
            if result == SpanExportResult.SUCCESS:
                self.acknowledged.update(f"{span.context.span_id:016x}" for span in spans)
            else:
                self.failed += len(spans)
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.inner.force_flush(timeout_millis)

    def snapshot(self) -> set[str]:
        with self.lock:
            return set(self.acknowledged)


class SteadyLoad:
    """A thread recording SPANS_PER_SECOND spans (server root + client child) through a
    real SDK pipeline: BatchSpanProcessor and the OTLP/gRPC exporter."""

    def __init__(self, caracal: Caracal) -> None:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(
            endpoint=f"http://{caracal.otlp_grpc_addr}", insecure=True, timeout=10
        )
        self.acks = AcknowledgedSpans(exporter)
        self.provider = TracerProvider(resource=Resource.create({"service.name": SERVICE}))
        self.provider.add_span_processor(
            BatchSpanProcessor(
                self.acks,
                max_queue_size=200_000,
                max_export_batch_size=256,
                schedule_delay_millis=200,
            )
        )
        self.tracer = self.provider.get_tracer("faults")
        self.stopping = threading.Event()
        self.recorded = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        interval = 2 / SPANS_PER_SECOND
        next_at = time.monotonic()
        while not self.stopping.is_set():
            with self.tracer.start_as_current_span("GET /orders", kind=SpanKind.SERVER):
                with self.tracer.start_as_current_span("SELECT orders", kind=SpanKind.CLIENT):
                    pass
            self.recorded += 2
            next_at += interval
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)

    def stop(self) -> set[str]:
        """Stops recording, flushes, and returns the acknowledged span ids."""
        self.stopping.set()
        self.thread.join(timeout=30)
        assert self.provider.force_flush(120_000), "force_flush timed out"
        self.provider.shutdown()
        return self.acks.snapshot()


def wait_for_empty_spool(caracal: Caracal, timeout: float = 120) -> dict[str, float]:
    def drained():
        caracal.assert_running()
        metrics = scrape(caracal.http_addr)
        return metrics if metrics["caracal_spool_batches"] == 0 else None

    return wait_until(drained, timeout=timeout, interval=0.5)


def assert_stored_exactly_once(
    clickhouse: PrivateClickHouse, database: str, acknowledged: set[str]
) -> None:
    """Every acknowledged span is in `spans` and `spans_by_trace` once (after copies
    collapse), and nothing is stored that the SDK did not send."""
    rows = clickhouse.sql(
        f"SELECT lower(hex(span_id)), count() FROM {database}.spans FINAL "
        f"WHERE service_name = '{SERVICE}' GROUP BY span_id FORMAT TSV"
    )
    stored = {}
    for line in rows.splitlines():
        span_id, count = line.split("\t")
        stored[span_id] = int(count)
    duplicated = {span_id: n for span_id, n in stored.items() if n != 1}
    assert not duplicated, f"{len(duplicated)} spans stored more than once"
    missing = acknowledged - stored.keys()
    assert not missing, f"{len(missing)} of {len(acknowledged)} acknowledged spans are missing"
    by_trace = int(
        clickhouse.sql(f"SELECT count() FROM {database}.spans_by_trace FINAL").strip()
    )
    assert by_trace == len(stored), f"spans_by_trace has {by_trace} rows, spans {len(stored)}"


def test_clickhouse_outage_loses_nothing(private_clickhouse, fault_database, tmp_path):
    caracal = start_caracal(fault_database, tmp_path / "caracal.log", private_clickhouse.url)
    try:
        load = SteadyLoad(caracal)
        time.sleep(3)
        private_clickhouse.stop()
        try:
            time.sleep(OUTAGE_SECS)
            during = scrape(caracal.http_addr)
            assert during["caracal_spooled_spans_total"] > 0, "nothing was spooled"
            assert during["caracal_spool_bytes"] > 0
        finally:
            private_clickhouse.start()
        time.sleep(3)
        acknowledged = load.stop()
        assert load.acks.failed == 0, f"{load.acks.failed} spans were refused"
        assert len(acknowledged) >= load.recorded * 0.99
        after = wait_for_empty_spool(caracal)
        assert after["caracal_replayed_spans_total"] == after["caracal_spooled_spans_total"]
        assert_stored_exactly_once(private_clickhouse, fault_database, acknowledged)
        caracal.stop_cleanly()
    finally:
        caracal.stop()


def kill_and_restart(caracal: Caracal, database: str, clickhouse_url: str, log: Path) -> Caracal:
    caracal.process.send_signal(signal.SIGKILL)
    caracal.process.wait(timeout=10)
    return start_caracal(
        database,
        log,
        clickhouse_url,
        spool_dir=caracal.log_path.parent / "spool",
        same_addrs_as=caracal,
    )


def test_sigkill_loses_no_acknowledged_span(private_clickhouse, fault_database, tmp_path):
    spool_dir = tmp_path / "spool"
    servers = [
        start_caracal(
            fault_database, tmp_path / "caracal-0.log", private_clickhouse.url, spool_dir
        )
    ]
    try:
        load = SteadyLoad(servers[0])
        time.sleep(3)
        # Killed with ClickHouse up: what was acknowledged is stored.
        servers.append(
            kill_and_restart(
                servers[-1], fault_database, private_clickhouse.url, tmp_path / "caracal-1.log"
            )
        )
        time.sleep(3)
        # Killed with ClickHouse down: what was acknowledged is in the spool, and the
        # next collector replays it.
        private_clickhouse.stop()
        try:
            time.sleep(4)
            before_kill = scrape(servers[-1].http_addr)
            # Spans in the spool now (ClickHouse may have taken some while stopping).
            pending = (
                before_kill["caracal_spooled_spans_total"]
                - before_kill["caracal_replayed_spans_total"]
            )
            assert pending > 0, "nothing was spooled before the kill"
            servers[-1].process.send_signal(signal.SIGKILL)
            servers[-1].process.wait(timeout=10)
        finally:
            private_clickhouse.start()
        servers.append(
            start_caracal(
                fault_database,
                tmp_path / "caracal-2.log",
                private_clickhouse.url,
                spool_dir,
                same_addrs_as=servers[-1],
            )
        )
        time.sleep(3)
        acknowledged = load.stop()
        after = wait_for_empty_spool(servers[-1])
        assert after["caracal_replayed_spans_total"] >= pending, (
            "the restarted collector did not replay the spool it found"
        )
        assert_stored_exactly_once(private_clickhouse, fault_database, acknowledged)
        servers[-1].stop_cleanly()
    finally:
        for server in servers:
            server.stop()


def collector_rss_bytes(caracal: Caracal) -> int:
    for line in Path(f"/proc/{caracal.process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


SPOOL_MAX_BYTES = 4 * 1024 * 1024
MEMORY_MAX_BYTES = 16 * 1024 * 1024
# The RSS the collector must stay under: the whole `caracal up` process (collector,
# query service, runtime) of a debug build, with decoded spans held to the memory bound.
RSS_BOUND_BYTES = 256 * 1024 * 1024


def test_full_spool_refuses_with_retry_signal_and_bounded_memory(
    private_clickhouse, fault_database, tmp_path
):
    config = tmp_path / "caracal.toml"
    config.write_text(
        "[collector]\n"
        f"spool_max_bytes = {SPOOL_MAX_BYTES}\n"
        f"max_memory_bytes = {MEMORY_MAX_BYTES}\n"
        "spool_fsync = \"never\"\n"
    )
    caracal = start_caracal(
        fault_database,
        tmp_path / "caracal.log",
        private_clickhouse.url,
        extra_env={"CARACAL_CONFIG": str(config)},
    )
    try:
        private_clickhouse.stop()
        try:
            # ~256 spans of ~1 KiB each per request.
            spans = [new_span("upload") for _ in range(256)]
            for span in spans:
                span.attributes.add(key="payload").value.string_value = "x" * 1024
            body = export_request(*spans, service=SERVICE)
            refusals = {"grpc": 0, "http": 0}
            retry_delays: list[float] = []
            accepted = 0
            max_rss = 0
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and (refusals["grpc"] < 5 or refusals["http"] < 5):
                try:
                    grpc_export(caracal, body)
                    accepted += 1
                except grpc.RpcError as error:
                    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error
                    retry_delays.append(retry_delay_seconds(error))
                    refusals["grpc"] += 1
                response = requests.post(
                    caracal.otlp_http_url,
                    data=body,
                    headers={"Content-Type": "application/x-protobuf"},
                    timeout=30,
                )
                if response.status_code == 429:
                    assert int(response.headers["Retry-After"]) >= 1
                    refusals["http"] += 1
                else:
                    assert response.status_code == 200, response.text
                    accepted += 1
                max_rss = max(max_rss, collector_rss_bytes(caracal))
            assert refusals["grpc"] >= 5 and refusals["http"] >= 5, (
                f"the full spool never refused: {refusals}, {accepted} requests accepted"
            )
            assert all(delay >= 1 for delay in retry_delays)
            spool_bytes = sum(
                path.stat().st_size for path in (tmp_path / "spool").glob("*.batch")
            )
            assert spool_bytes <= SPOOL_MAX_BYTES
            metrics = scrape(caracal.http_addr)
            refused_full = sum(
                value
                for series, value in metrics.items()
                if series.startswith("caracal_refused_requests_total") and "spool_full" in series
            )
            assert refused_full >= 10, metrics
            assert max_rss < RSS_BOUND_BYTES, f"RSS {max_rss >> 20} MiB"
            print(f"max RSS while refusing: {max_rss >> 20} MiB; {accepted} requests spooled")
        finally:
            private_clickhouse.start()
        # ClickHouse is back: the spool drains and the collector accepts again.
        wait_for_empty_spool(caracal)
        grpc_export(caracal, body)
        caracal.stop_cleanly()
    finally:
        caracal.stop()


def retry_delay_seconds(error: grpc.RpcError) -> float:
    """The RetryInfo delay of a gRPC error's `grpc-status-details-bin`."""
    details = dict(error.trailing_metadata() or ()).get("grpc-status-details-bin")
    assert details, "no status details on a retryable error"
    status = status_pb2.Status.FromString(details)
    for detail in status.details:
        info = error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            return info.retry_delay.seconds + info.retry_delay.nanos / 1e9
    raise AssertionError(f"no RetryInfo in {status}")
