#!/usr/bin/env bash
# A three-node RabbitMQ cluster on this machine, beside the main broker, for
# the cluster tests (tests/cluster.rs) and for trying failover by hand.
#
#   scripts/cluster.sh start     start the three nodes, join them, wait for them
#   scripts/cluster.sh stop      stop the three nodes (idempotent)
#   scripts/cluster.sh status    which nodes run, and the cluster's view
#   scripts/cluster.sh uri       the failover list of the three nodes
#   scripts/cluster.sh nodes     the three node names, one a line
#
# The main broker (rabbit@localhost on 127.0.0.1:5672) is never stopped nor
# changed: every command below names one of our nodes with -n, and each node
# has its own ports, configuration, enabled-plugins file (no plugin, so no
# port of the main broker's plugins can collide), data and logs under
# target/rabbitmq-cluster of this checkout. The nodes use the main node's
# Erlang cookie, so `rabbitmqctl -n logcollect-c1@localhost ...` works as root
# like any rabbitmqctl command.
#
# Ports (override with LOGCOLLECT_CLUSTER_AMQP_PORT / _DIST_PORT, the first
# node's; the others follow): AMQP 5691-5693, Erlang distribution 25691-25693.
# Only one cluster can run per machine at a time: the tests take a lock file.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
base="$repo/target/rabbitmq-cluster"
amqp_port=${LOGCOLLECT_CLUSTER_AMQP_PORT:-5691}
dist_port=${LOGCOLLECT_CLUSTER_DIST_PORT:-25691}
prefix=logcollect-c
nodes=("${prefix}1@localhost" "${prefix}2@localhost" "${prefix}3@localhost")
# The main node's cookie (the Debian/Ubuntu package keeps it here; its
# rabbitmqctl runs as the rabbitmq user, with this cookie).
main_cookie=${LOGCOLLECT_CLUSTER_COOKIE_FILE:-/var/lib/rabbitmq/.erlang.cookie}
# A node boots in 3 to 10 s here; 120 s only matters on a machine under load.
boot_timeout=120

say() { printf 'cluster: %s\n' "$*" >&2; }

# rabbitmqctl against one of OUR nodes only: refuses any other name, so no
# command of this script can reach the main broker.
ctl() {
    local node=$1
    shift
    case $node in
        "${prefix}"[123]@localhost) ;;
        *) say "refusing to run rabbitmqctl against $node"; return 2 ;;
    esac
    rabbitmqctl -q -n "$node" "$@"
}

index_of() { # node -> 0, 1, 2
    local n=${1#"$prefix"}
    echo $((${n%%@*} - 1))
}

node_dir() { echo "$base/n$(($(index_of "$1") + 1))"; }

node_pid() {
    local pidfile
    pidfile="$(node_dir "$1")/pid"
    [ -s "$pidfile" ] && cat "$pidfile"
}

running() { # the node's Erlang VM answers
    ctl "$1" ping >/dev/null 2>&1
}

start_node() {
    local node=$1 i dir
    i=$(index_of "$node")
    dir=$(node_dir "$node")
    # A fresh node every time: no state from an earlier run can leak in.
    rm -rf "$dir"
    mkdir -p "$dir/mnesia" "$dir/log" "$dir/home" "$dir/conf.d"
    install -m 0400 "$main_cookie" "$dir/home/.erlang.cookie"
    printf '[].\n' >"$dir/enabled_plugins"
    : >"$dir/rabbitmq-env.conf"
    cat >"$dir/rabbitmq.conf" <<EOF
listeners.tcp.1 = 127.0.0.1:$((amqp_port + i))
loopback_users.guest = true
log.console = false
log.file.level = info
EOF
    # Environment only for this node's process: the main broker's
    # /etc/rabbitmq files (its env file sets NODENAME, its config the 5672
    # listener) are never read.
    env -i PATH="$PATH" HOME="$dir/home" LANG=C.UTF-8 \
        RABBITMQ_NODENAME="$node" \
        RABBITMQ_USE_LONGNAME=false \
        RABBITMQ_CONF_ENV_FILE="$dir/rabbitmq-env.conf" \
        RABBITMQ_CONFIG_FILE="$dir/rabbitmq.conf" \
        RABBITMQ_CONFIG_FILES="$dir/conf.d" \
        RABBITMQ_ADVANCED_CONFIG_FILE="$dir/advanced.config" \
        RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins" \
        RABBITMQ_MNESIA_BASE="$dir/mnesia" \
        RABBITMQ_LOG_BASE="$dir/log" \
        RABBITMQ_PID_FILE="$dir/pid" \
        RABBITMQ_PLUGINS_EXPAND_DIR="$dir/plugins-expand" \
        RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
        RABBITMQ_NODE_PORT=$((amqp_port + i)) \
        RABBITMQ_DIST_PORT=$((dist_port + i)) \
        ERL_EPMD_ADDRESS=127.0.0.1 \
        RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}" \
        setsid /usr/lib/rabbitmq/bin/rabbitmq-server </dev/null >"$dir/log/startup.log" 2>&1 &
    echo $! >"$dir/launcher.pid"
}

await_node() {
    local node=$1
    if ! timeout "$boot_timeout" bash -c "until rabbitmqctl -q -n '$node' await_startup >/dev/null 2>&1; do sleep 0.5; done"; then
        say "$node did not start within ${boot_timeout}s; its log:"
        tail -n 30 "$(node_dir "$node")/log/startup.log" >&2 || true
        return 1
    fi
}

stop_node() {
    local node=$1 pid dir
    dir=$(node_dir "$node")
    pid=$(node_pid "$node" || true)
    if running "$node"; then
        ctl "$node" stop >/dev/null 2>&1 || true
    fi
    # Our own process only, by the id its pid file holds.
    if [ -n "${pid:-}" ] && kill -0 "$pid" 2>/dev/null; then
        for _ in $(seq 1 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$pid" 2>/dev/null || true
    fi
    if [ -s "$dir/launcher.pid" ]; then
        kill "$(cat "$dir/launcher.pid")" 2>/dev/null || true
        rm -f "$dir/launcher.pid"
    fi
}

cmd_start() {
    [ -r "$main_cookie" ] || { say "cannot read the main node's cookie $main_cookie (run as root)"; exit 1; }
    cmd_stop
    mkdir -p "$base"
    local t0=$SECONDS
    for node in "${nodes[@]}"; do start_node "$node"; done
    for node in "${nodes[@]}"; do await_node "$node"; done
    for node in "${nodes[@]:1}"; do
        ctl "$node" stop_app
        ctl "$node" join_cluster "${nodes[0]}"
        ctl "$node" start_app
    done
    ctl "${nodes[0]}" await_online_nodes 3 --timeout "$boot_timeout"
    say "3 nodes running and joined in $((SECONDS - t0)) s: $(cmd_uri)"
}

cmd_stop() {
    local node
    for node in "${nodes[@]}"; do stop_node "$node"; done
}

cmd_status() {
    local node i up=0
    for node in "${nodes[@]}"; do
        i=$(index_of "$node")
        if running "$node"; then
            up=$((up + 1))
            echo "$node running (AMQP 127.0.0.1:$((amqp_port + i)))"
        else
            echo "$node stopped"
        fi
    done
    if [ "$up" -gt 0 ]; then
        for node in "${nodes[@]}"; do
            if running "$node"; then
                ctl "$node" cluster_status
                break
            fi
        done
    fi
    [ "$up" -eq 3 ]
}

cmd_uri() {
    local i uris=()
    for i in 0 1 2; do uris+=("amqp://guest:guest@127.0.0.1:$((amqp_port + i))//"); done
    (IFS=';'; echo "${uris[*]}")
}

case ${1:-} in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    uri) cmd_uri ;;
    nodes) printf '%s\n' "${nodes[@]}" ;;
    *) echo "usage: $0 start|stop|status|uri|nodes" >&2; exit 2 ;;
esac
