"""Fixtures: a local ClickHouse and one `caracal up` per test module.

Each module gets its own Caracal process on free ports and its own ClickHouse database
(`e2e_<module>_<pid>`), dropped at the end; `launch_caracal` starts servers on demand
for restart tests. Set CARACAL_BIN to test another binary
(default: target/debug/caracal, built with `cargo build`), and CARACAL_LOG to change
the server's log filter (default: info). When a test fails, the server's log is added
to the failure report.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
from collections.abc import Callable
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
    zipkin_addr: str
    log_path: Path
    api: Api = field(init=False)

    def __post_init__(self) -> None:
        self.api = Api(f"http://{self.http_addr}")

    def __repr__(self) -> str:
        return f"Caracal(database={self.database!r}, api={self.api.base_url!r})"

    @property
    def otlp_http_url(self) -> str:
        return f"http://{self.otlp_http_addr}/v1/traces"

    @property
    def zipkin_url(self) -> str:
        return f"http://{self.zipkin_addr}/api/v2/spans"

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def assert_running(self) -> None:
        code = self.process.poll()
        assert code is None, f"caracal exited with {code}:\n{self.log_tail()}"

    def stop(self) -> int:
        """SIGTERM, then SIGKILL after STOP_TIMEOUT_S; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"caracal ignored SIGTERM for {STOP_TIMEOUT_S} s") from None

    def stop_cleanly(self) -> None:
        """Stops a server that must still be running, and must exit with 0."""
        self.assert_running()
        code = self.stop()
        assert code == 0, f"caracal exited with {code} after SIGTERM:\n{self.log_tail()}"


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


def start_caracal(
    database: str,
    log_path: Path,
    clickhouse_url: str,
    spool_dir: Path | None = None,
    extra_env: dict[str, str] | None = None,
    same_addrs_as: Caracal | None = None,
) -> Caracal:
    """`caracal up` on free ports (or on those of `same_addrs_as`, for a restart); the
    spool defaults to a folder beside the log."""
    if same_addrs_as is None:
        addrs = {name: free_addr() for name in ("grpc", "http", "query", "zipkin")}
    else:
        addrs = {
            "grpc": same_addrs_as.otlp_grpc_addr,
            "http": same_addrs_as.otlp_http_addr,
            "query": same_addrs_as.http_addr,
            "zipkin": same_addrs_as.zipkin_addr,
        }
    env = {
        **os.environ,
        "CARACAL_SPOOL_DIR": str(spool_dir or log_path.parent / "spool"),
        "CARACAL_CLICKHOUSE_URL": clickhouse_url,
        "CARACAL_CLICKHOUSE_DATABASE": database,
        "CARACAL_OTLP_GRPC_ADDR": addrs["grpc"],
        "CARACAL_OTLP_HTTP_ADDR": addrs["http"],
        "CARACAL_HTTP_ADDR": addrs["query"],
        "CARACAL_ZIPKIN_ADDR": addrs["zipkin"],
        "CARACAL_LOG": os.environ.get("CARACAL_LOG", "info"),
        "NO_COLOR": "1",
        **(extra_env or {}),
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
    caracal = Caracal(
        process,
        database,
        otlp_grpc_addr=addrs["grpc"],
        otlp_http_addr=addrs["http"],
        http_addr=addrs["query"],
        zipkin_addr=addrs["zipkin"],
        log_path=log_path,
    )

    def ready() -> bool:
        caracal.assert_running()
        return caracal.api.healthy()

    try:
        wait_until(ready, timeout=START_TIMEOUT_S, interval=0.2)
    except AssertionError:
        caracal.stop()
        raise
    return caracal


def database_name(node_name: str) -> str:
    return f"e2e_{re.sub(r'[^A-Za-z0-9_]', '_', node_name)}_{os.getpid()}"


@contextlib.contextmanager
def fresh_database(name: str):
    """A ClickHouse database name, dropped before and after use."""
    clickhouse(f"DROP DATABASE IF EXISTS {name}")
    try:
        yield name
    finally:
        clickhouse(f"DROP DATABASE IF EXISTS {name}")


@pytest.fixture(scope="module")
def caracal(request, clickhouse_url, tmp_path_factory) -> Caracal:
    """`caracal up` on free ports with a database of its own, for one test module."""
    module = request.module.__name__.rsplit(".", 1)[-1]
    with fresh_database(database_name(module)) as database:
        log_path = tmp_path_factory.mktemp("caracal") / f"{module}.log"
        server = start_caracal(database, log_path, clickhouse_url)
        request.node.caracal_servers = [server]
        try:
            yield server
            server.stop_cleanly()
        finally:
            server.stop()


@pytest.fixture
def launch_caracal(request, clickhouse_url, tmp_path) -> Callable[[], Caracal]:
    """Starts `caracal up` processes on demand, one after another on the same fresh
    database (for restart tests); any still running are stopped at the end."""
    with fresh_database(database_name(request.node.name)) as database:
        started: list[Caracal] = []
        request.node.caracal_servers = started

        def launch() -> Caracal:
            log_path = tmp_path / f"caracal-{len(started)}.log"
            started.append(start_caracal(database, log_path, clickhouse_url))
            return started[-1]

        try:
            yield launch
        finally:
            for server in started:
                server.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Adds the servers' logs to the report of a failed test (or failed teardown)."""
    outcome = yield
    report = outcome.get_result()
    if not report.failed:
        return
    servers = getattr(item.getparent(pytest.Module), "caracal_servers", [])
    for server in servers + getattr(item, "caracal_servers", []):
        report.sections.append((f"caracal log ({server.log_path})", server.log_tail()))
