#!/usr/bin/env bash
# Run a local ClickHouse server for Caracal, without systemd.
#
#   deploy/clickhouse.sh start|stop|status
#
# Environment:
#   CARACAL_CH_DIR  instance folder (data, tmp, logs, rendered config, pid file);
#                   default: <checkout>/.caracal/clickhouse
#   CH_HTTP_PORT    HTTP port (default 8123)
#   CH_TCP_PORT     native TCP port (default 9000)
#   CH_LOG_LEVEL    server log level (default warning)
#
# The server listens on 127.0.0.1 only. Config templates live in
# deploy/clickhouse-config/ and are rendered into $CARACAL_CH_DIR/etc/ on every start.
# On Debian 12 the only installable server is Debian's clickhouse-server 18.16.
set -euo pipefail

SCRIPT_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)"
REPO_ROOT="$(cd -- "$SCRIPT_DIR/.." && pwd -P)"
TEMPLATE_DIR="$SCRIPT_DIR/clickhouse-config"

CH_DIR="${CARACAL_CH_DIR:-$REPO_ROOT/.caracal/clickhouse}"
CH_HTTP_PORT="${CH_HTTP_PORT:-8123}"
CH_TCP_PORT="${CH_TCP_PORT:-9000}"
CH_LOG_LEVEL="${CH_LOG_LEVEL:-warning}"

START_TIMEOUT=30 # seconds to wait for /ping after start
STOP_TIMEOUT=15  # seconds to wait after SIGTERM before SIGKILL

log() { printf 'clickhouse.sh: %s\n' "$*"; }
die() { printf 'clickhouse.sh: error: %s\n' "$*" >&2; exit 1; }

usage() {
    echo "usage: $0 start|stop|status" >&2
    exit 2
}

check_port() {
    local name="$1" value="$2"
    [[ "$value" =~ ^[0-9]+$ ]] && ((value >= 1 && value <= 65535)) \
        || die "$name must be a port number, got '$value'"
}

# Make CH_DIR absolute without requiring it to exist yet.
absolute_dir() {
    case "$1" in
        /*) printf '%s\n' "${1%/}" ;;
        *) printf '%s/%s\n' "$(pwd -P)" "${1%/}" ;;
    esac
}

PID_FILE="" # set by init_paths
init_paths() {
    check_port CH_HTTP_PORT "$CH_HTTP_PORT"
    check_port CH_TCP_PORT "$CH_TCP_PORT"
    [[ "$CH_HTTP_PORT" != "$CH_TCP_PORT" ]] || die "CH_HTTP_PORT and CH_TCP_PORT must differ"
    CH_DIR="$(absolute_dir "$CH_DIR")"
    PID_FILE="$CH_DIR/clickhouse-server.pid"
}

server_bin() {
    if command -v clickhouse-server >/dev/null 2>&1; then
        command -v clickhouse-server
    elif [[ -x /usr/sbin/clickhouse-server ]]; then
        echo /usr/sbin/clickhouse-server
    else
        return 1
    fi
}

# ---------------------------------------------------------------- installation

install_clickhouse() {
    local sudo=()
    if ((EUID != 0)); then
        command -v sudo >/dev/null 2>&1 || die "clickhouse-server is missing and installing it needs root (no sudo found)"
        sudo=(sudo)
    fi
    local apt=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -qq -y
        -o Dpkg::Use-Pty=0 -o DPkg::Lock::Timeout=300)

    # apt's chatter (debconf, invoke-rc.d) goes to a file that is shown only on failure.
    local apt_log
    apt_log="$(mktemp "${TMPDIR:-/tmp}/caracal-apt.XXXXXX")"
    # apt-get update only when the package lists do not know the package yet.
    local candidate
    candidate="$(apt-cache policy clickhouse-server 2>/dev/null | awk '/Candidate:/ {print $2}')"
    if [[ -z "$candidate" || "$candidate" == "(none)" ]]; then
        log "running apt-get update"
        "${apt[@]}" update >>"$apt_log" 2>&1 || { cat "$apt_log" >&2; die "apt-get update failed"; }
    fi
    log "installing clickhouse-server and clickhouse-client with apt-get"
    "${apt[@]}" install --no-install-recommends clickhouse-server clickhouse-client >>"$apt_log" 2>&1 \
        || { cat "$apt_log" >&2; die "apt-get install failed"; }
    rm -f "$apt_log"
    server_bin >/dev/null || die "clickhouse-server still missing after apt-get install"
    log "installed $(dpkg-query -W -f='clickhouse-server ${Version}' clickhouse-server 2>/dev/null || echo clickhouse-server)"
}

# ---------------------------------------------------------------- probes

# True when something answers ClickHouse's /ping on 127.0.0.1:$CH_HTTP_PORT.
ping_ok() {
    local body
    if command -v curl >/dev/null 2>&1; then
        body="$(curl -fsS --max-time 2 "http://127.0.0.1:$CH_HTTP_PORT/ping" 2>/dev/null)" || return 1
    else
        # Fallback without curl: raw HTTP over bash's /dev/tcp.
        body="$(
            exec 2>/dev/null
            exec 3<>"/dev/tcp/127.0.0.1/$CH_HTTP_PORT" || exit 1
            printf 'GET /ping HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
            timeout 2 cat <&3
        )" || return 1
    fi
    [[ "$body" == *Ok.* ]]
}

# True when some process accepts TCP connections on 127.0.0.1:$1.
port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Prints the recorded PID if that process is alive and is our clickhouse-server.
recorded_pid() {
    [[ -f "$PID_FILE" ]] || return 1
    local pid
    pid="$(tr -dc '0-9' <"$PID_FILE")"
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 1
    # Guard against PID reuse: the process must be a clickhouse-server using our config.
    local cmdline
    cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" || return 1
    [[ "$cmdline" == *clickhouse* && "$cmdline" == *"$CH_DIR/etc/config.xml"* ]] || return 1
    echo "$pid"
}

show_log_tail() {
    local f
    for f in "$CH_DIR/log/stdout.log" "$CH_DIR/log/clickhouse-server.err.log" "$CH_DIR/log/clickhouse-server.log"; do
        if [[ -s "$f" ]]; then
            echo "----- tail of $f" >&2
            tail -n 30 "$f" >&2
        fi
    done
}

wait_for_ping() {
    local pid="$1" deadline=$((SECONDS + START_TIMEOUT))
    while ((SECONDS < deadline)); do
        if ping_ok; then
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "clickhouse.sh: error: clickhouse-server (pid $pid) exited during startup" >&2
            return 1
        fi
        sleep 0.2
    done
    echo "clickhouse.sh: error: clickhouse-server (pid $pid) did not answer /ping on port $CH_HTTP_PORT within ${START_TIMEOUT}s" >&2
    return 1
}

# ---------------------------------------------------------------- config

# Escape a value for XML text, then substitute it (bash 5.2: a quoted replacement keeps '&' literal).
render() {
    local src="$1" dst="$2" text dir
    text="$(<"$src")"
    dir="$CH_DIR"
    dir="${dir//&/&amp;}"
    dir="${dir//</&lt;}"
    dir="${dir//>/&gt;}"
    text="${text//@CH_DIR@/"$dir"}"
    text="${text//@HTTP_PORT@/"$CH_HTTP_PORT"}"
    text="${text//@TCP_PORT@/"$CH_TCP_PORT"}"
    text="${text//@LOG_LEVEL@/"$CH_LOG_LEVEL"}"
    printf '%s\n' "$text" >"$dst.tmp"
    mv -f "$dst.tmp" "$dst"
}

prepare_dir() {
    mkdir -p "$CH_DIR"/{etc,data,tmp,log,user_files,format_schemas}
    render "$TEMPLATE_DIR/config.xml" "$CH_DIR/etc/config.xml"
    render "$TEMPLATE_DIR/users.xml" "$CH_DIR/etc/users.xml"
    # Running as root: the server runs as root too (18.16 does not switch users), so the
    # folder stays root-owned. Running as another user: that user owns everything.
}

# ---------------------------------------------------------------- commands

cmd_start() {
    init_paths
    # Concurrent starts (test processes run in parallel) take turns on a lock in the
    # data folder: the first starts the server, the others find it running.
    mkdir -p "$CH_DIR"
    exec 9>"$CH_DIR/start.lock"
    flock 9
    local pid
    if pid="$(recorded_pid)"; then
        if ping_ok; then
            log "already running (pid $pid, http 127.0.0.1:$CH_HTTP_PORT, dir $CH_DIR)"
            return 0
        fi
        log "pid $pid is alive but not answering yet; waiting"
        if wait_for_ping "$pid"; then
            log "running (pid $pid, http 127.0.0.1:$CH_HTTP_PORT)"
            return 0
        fi
        show_log_tail
        exit 1
    fi
    if ping_ok; then
        log "a server already answers on http://127.0.0.1:$CH_HTTP_PORT/ping (not started from $CH_DIR, so stop will not touch it); nothing to do"
        return 0
    fi
    rm -f "$PID_FILE"

    local bin
    if ! bin="$(server_bin)"; then
        install_clickhouse
        bin="$(server_bin)"
    fi

    local port
    for port in "$CH_HTTP_PORT" "$CH_TCP_PORT"; do
        if port_in_use "$port"; then
            die "port $port on 127.0.0.1 is already used by another process (set CH_HTTP_PORT / CH_TCP_PORT)"
        fi
    done

    prepare_dir
    log "starting $bin (dir $CH_DIR, http $CH_HTTP_PORT, tcp $CH_TCP_PORT)"
    # setsid: own session, so the server survives the calling shell/terminal.
    # The background child is not a process group leader, so setsid execs without forking
    # and $! is the server's PID.
    (
        cd "$CH_DIR"
        exec 9>&- # the server must not hold the start lock
        exec setsid nohup "$bin" --config-file="$CH_DIR/etc/config.xml" \
            </dev/null >>"$CH_DIR/log/stdout.log" 2>&1
    ) &
    pid=$!
    echo "$pid" >"$PID_FILE"

    local t0=$SECONDS
    if ! wait_for_ping "$pid"; then
        show_log_tail
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
        fi
        rm -f "$PID_FILE"
        exit 1
    fi
    log "running (pid $pid, http://127.0.0.1:$CH_HTTP_PORT, tcp 127.0.0.1:$CH_TCP_PORT, ready in $((SECONDS - t0))s)"
}

cmd_stop() {
    init_paths
    local pid
    if ! pid="$(recorded_pid)"; then
        rm -f "$PID_FILE"
        if ping_ok; then
            log "not running from $CH_DIR (another server answers on port $CH_HTTP_PORT; not touched)"
        else
            log "not running"
        fi
        return 0
    fi
    log "stopping pid $pid"
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + STOP_TIMEOUT))
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do
        sleep 0.2
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "still alive after ${STOP_TIMEOUT}s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
    fi
    rm -f "$PID_FILE"
    log "stopped"
}

cmd_status() {
    init_paths
    local pid
    if pid="$(recorded_pid)"; then
        if ping_ok; then
            echo "running (pid $pid, http://127.0.0.1:$CH_HTTP_PORT, tcp 127.0.0.1:$CH_TCP_PORT, dir $CH_DIR)"
            return 0
        fi
        echo "not running: pid $pid is alive but does not answer /ping on port $CH_HTTP_PORT"
        return 3
    fi
    if ping_ok; then
        echo "running (a server answers on http://127.0.0.1:$CH_HTTP_PORT, but not started from $CH_DIR)"
        return 0
    fi
    echo "not running"
    return 3
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    *) usage ;;
esac
