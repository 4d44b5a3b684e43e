"""Fixtures: a local ClickHouse and one `caracal up` per test module.

Each module gets its own Caracal process on free ports and its own ClickHouse database
(`e2e_<module>_<pid>`), dropped at the end. Set CARACAL_BIN to test another binary
(default: target/debug/caracal, built with `cargo build`), and CARACAL_LOG to change
the server's log filter (default: info). When a test fails, the server's log is added
to the failure report.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from helpers import Api, wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]
CLICKHOUSE_URL = os.environ.get("CARACAL_CLICKHOUSE_URL", "http://127.0.0.1:8123")
START_TIMEOUT_S = 60
STOP_TIMEOUT_S = 15
LOG_TAIL_LINES = 200


@dataclass
class Caracal:
    """A running `caracal up` and where to reach it."""

    process: subprocess.Popen
    database: str
    otlp_grpc_addr: str
    otlp_http_addr: str
    http_addr: str
    log_path: Path
    api: Api = field(init=False)

    def __post_init__(self) -> None:
        self.api = Api(f"http://{self.http_addr}")

    @property
    def otlp_http_url(self) -> str:
        return f"http://{self.otlp_http_addr}/v1/traces"

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def assert_running(self) -> None:
        code = self.process.poll()
        assert code is None, f"caracal exited with {code}:\n{self.log_tail()}"


def free_addr() -> str:
    """A 127.0.0.1 address with a port that was free a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{probe.getsockname()[1]}"


def clickhouse(sql: str) -> str:
    response = requests.post(CLICKHOUSE_URL + "/", data=sql.encode(), timeout=30)
    assert response.status_code == 200, f"{sql}: {response.text}"
    return response.text


@pytest.fixture(scope="session")
def clickhouse_url() -> str:
    """Starts the local ClickHouse unless it already runs."""
    subprocess.run([REPO_ROOT / "deploy" / "clickhouse.sh", "start"], check=True)
    return CLICKHOUSE_URL


def caracal_binary() -> Path:
    binary = Path(os.environ.get("CARACAL_BIN", REPO_ROOT / "target" / "debug" / "caracal"))
    if not binary.is_file():
        pytest.fail(f"{binary} does not exist: run `cargo build` or set CARACAL_BIN")
    return binary


def start_caracal(database: str, log_path: Path, clickhouse_url: str) -> Caracal:
    addrs = {name: free_addr() for name in ("grpc", "http", "query", "zipkin")}
    env = {
        **os.environ,
        "CARACAL_CLICKHOUSE_URL": clickhouse_url,
        "CARACAL_CLICKHOUSE_DATABASE": database,
        "CARACAL_OTLP_GRPC_ADDR": addrs["grpc"],
        "CARACAL_OTLP_HTTP_ADDR": addrs["http"],
        "CARACAL_HTTP_ADDR": addrs["query"],
        "CARACAL_ZIPKIN_ADDR": addrs["zipkin"],
        "CARACAL_LOG": os.environ.get("CARACAL_LOG", "info"),
    }
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [caracal_binary(), "up"],
            env=env,
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    caracal = Caracal(process, database, addrs["grpc"], addrs["http"], addrs["query"], log_path)

    def ready() -> bool:
        caracal.assert_running()
        return caracal.api.healthy()

    try:
        wait_until(ready, timeout=START_TIMEOUT_S, interval=0.2)
    except AssertionError:
        stop_caracal(caracal)
        raise
    return caracal


def stop_caracal(caracal: Caracal) -> int:
    """SIGTERM, then SIGKILL after STOP_TIMEOUT_S; returns the exit code."""
    if caracal.process.poll() is None:
        caracal.process.send_signal(signal.SIGTERM)
    try:
        return caracal.process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        caracal.process.kill()
        caracal.process.wait()
        raise AssertionError(f"caracal ignored SIGTERM for {STOP_TIMEOUT_S} s")


@pytest.fixture(scope="module")
def caracal(request, clickhouse_url, tmp_path_factory) -> Caracal:
    """`caracal up` on free ports with a database of its own, for one test module."""
    module = request.module.__name__.rsplit(".", 1)[-1]
    database = f"e2e_{module}_{os.getpid()}"
    clickhouse(f"DROP DATABASE IF EXISTS {database}")
    log_path = tmp_path_factory.mktemp("caracal") / f"{module}.log"
    server = start_caracal(database, log_path, clickhouse_url)
    request.node.caracal_server = server
    try:
        yield server
        server.assert_running()
        code = stop_caracal(server)
        assert code == 0, f"caracal exited with {code} after SIGTERM:\n{server.log_tail()}"
    finally:
        if server.process.poll() is None:
            stop_caracal(server)
        clickhouse(f"DROP DATABASE IF EXISTS {database}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Adds the server's log to the report of a failed test (or failed teardown)."""
    outcome = yield
    report = outcome.get_result()
    server = getattr(item.getparent(pytest.Module), "caracal_server", None)
    if report.failed and server is not None:
        report.sections.append((f"caracal log ({server.log_path})", server.log_tail()))
