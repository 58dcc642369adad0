# A local RabbitMQ on 127.0.0.1:5672, installed and started when need be.
# Sourced (not run) by .ci/run and scripts/try.sh, so both get the broker
# the same way. Functions return non-zero, having said why on stderr, when
# they cannot; the caller decides what to tell the user.

broker_log() { printf '== %s\n' "$*"; }

# Whether something accepts TCP connections on the AMQP port.
broker_listening() {
    (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null
}

# Whether the local RabbitMQ node's process runs and answers rabbitmqctl
# (its app may be stopped).
broker_node_answers() {
    as_root timeout 30 rabbitmqctl -q ping >/dev/null 2>&1
}

# Runs a command as root: as it is when we are root, else through sudo.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        echo "root is needed to run: $* (and there is no sudo)" >&2
        return 1
    fi
}

# Starts the node in the background without the caller's open files. A
# daemon inherits every descriptor it is given, for its whole life: started
# from `flock LOCK bash scripts/try.sh`, the node would hold that lock until
# it stops (it happened: the tests' fault lock, held by RabbitMQ for 30 min).
start_rabbitmq_node() {
    (
        for fd in /proc/self/fd/*; do
            fd=${fd##*/}
            if [[ $fd =~ ^[0-9]+$ ]] && [ "$fd" -gt 2 ]; then
                eval "exec $fd>&-" 2>/dev/null || true
            fi
        done
        as_root rabbitmq-server -detached
    )
}

# Installs rabbitmq-server with apt-get when it is missing, starts the node
# when it is down, starts the app when it is stopped, and waits until
# 127.0.0.1:5672 accepts connections.
ensure_rabbitmq() {
    if ! command -v rabbitmq-server >/dev/null 2>&1 && [ ! -x /usr/sbin/rabbitmq-server ]; then
        if ! command -v apt-get >/dev/null 2>&1; then
            echo "rabbitmq-server is not installed, and there is no apt-get to install it with" >&2
            return 1
        fi
        broker_log "installing rabbitmq-server (apt-get)"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq || return 1
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server >/dev/null ||
            return 1
    fi
    # `ping` answers whenever the node's process runs, even with its app
    # stopped (`status` does not); only a node that does not answer is started.
    if ! broker_node_answers; then
        broker_log "starting rabbitmq-server (waiting up to 120 s for the node)"
        # Its own exit status is not the verdict: the node's answer is.
        start_rabbitmq_node || true
        # A cold start on a busy two-core machine takes tens of seconds.
        for _ in $(seq 1 120); do
            broker_node_answers && break
            sleep 1
        done
    fi
    # The app may have been stopped (`rabbitmqctl stop_app`, as the fault
    # tests do): start it (idempotent), then wait until it has booted.
    as_root rabbitmqctl -q start_app >/dev/null 2>&1 || true
    if ! as_root timeout 120 rabbitmqctl -q await_startup; then
        echo "the RabbitMQ node did not start (rabbitmqctl await_startup failed or took over 120 s; its log: /var/log/rabbitmq/)" >&2
        return 1
    fi
    # The listener opens shortly after the app starts.
    for _ in $(seq 1 60); do
        if broker_listening; then
            broker_log "rabbitmq is up on 127.0.0.1:5672"
            return 0
        fi
        sleep 1
    done
    echo "rabbitmq did not open 127.0.0.1:5672 within 60 s (its log: /var/log/rabbitmq/)" >&2
    return 1
}
