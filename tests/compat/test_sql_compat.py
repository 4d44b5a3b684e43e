"""Every SQL statement Caracal sends runs on current ClickHouse (chDB) and on the
ClickHouse server the project runs (Debian's 18.16).

`caracal sql-catalog` prints each statement (schema first, then reads and maintenance)
with sample values bound; both engines must accept all of them in order.
"""

import json
import os
import subprocess
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BINARY = os.environ.get("CARACAL_BIN", str(ROOT / "target/debug/caracal"))
CLICKHOUSE_URL = os.environ.get("CARACAL_CLICKHOUSE_URL", "http://127.0.0.1:8123")


def catalog(database):
    output = subprocess.run(
        [BINARY, "sql-catalog", "--clickhouse-database", database],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    statements = json.loads(output)
    assert len(statements) > 30
    return statements


def test_every_statement_runs_on_current_clickhouse(tmp_path):
    from chdb import session

    chdb_session = session.Session(str(tmp_path / "chdb"))
    try:
        version = chdb_session.query("SELECT version()", "CSV").data().strip()
        failures = []
        for statement in catalog("compat_current"):
            try:
                chdb_session.query(statement)
            except Exception as error:  # chDB raises its own error types
                failures.append(f"{statement[:200]}\n  -> {error}")
        assert not failures, f"on ClickHouse {version}:\n" + "\n".join(failures)
    finally:
        chdb_session.close()


def run_on_server(statement):
    request = urllib.request.Request(CLICKHOUSE_URL + "/", data=statement.encode())
    with urllib.request.urlopen(request, timeout=30) as response:
        response.read()


def test_every_statement_runs_on_the_local_server():
    subprocess.run(["bash", str(ROOT / "deploy/clickhouse.sh"), "start"], check=True, capture_output=True)
    database = f"compat_server_{os.getpid()}"
    failures = []
    try:
        for statement in catalog(database):
            try:
                run_on_server(statement)
            except urllib.error.HTTPError as error:
                failures.append(f"{statement[:200]}\n  -> {error.read().decode()[:300]}")
    finally:
        run_on_server(f"DROP DATABASE IF EXISTS {database}")
    assert not failures, "\n".join(failures)


if __name__ == "__main__":
    raise SystemExit(pytest.main([__file__, "-q"]))
