#!/usr/bin/env bash
# The local stack: a real Apache Kafka broker (KRaft, single node) and a real redis-server,
# both on loopback.
#
#   ops/stack.sh up       start both (harmless when already up), wait until they answer
#   ops/stack.sh down     stop both
#   ops/stack.sh status   say what runs where
#
# Besides the plain ports, the broker has a SASL_SSL listener (SCRAM-SHA-512, user `citybrain`) and
# Redis a TLS port and an ACL user `citybrain`, as a city runs them; their CA, keys and passwords
# are made on the first `up`, in <run dir>/tls (ca.pem, kafka-password, redis-password). A Redis
# Cluster of three masters (16390-16392) is there for what outgrows one Redis.
#
# Settings (environment): CITYBRAIN_KAFKA_PORT (19092), CITYBRAIN_KAFKA_CONTROLLER_PORT (19093),
# CITYBRAIN_KAFKA_SECURE_PORT (19094), CITYBRAIN_REDIS_PORT (16379), CITYBRAIN_REDIS_TLS_PORT
# (16380), CITYBRAIN_REDIS_CLUSTER_PORT (16390: the first of three), CITYBRAIN_RUN_DIR (<repo>/.run: data, logs and pid files), CITYBRAIN_PARTITIONS
# (default partitions for topics the broker creates, 4).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
run_dir=${CITYBRAIN_RUN_DIR:-$(dirname "$here")/.run}
kafka_port=${CITYBRAIN_KAFKA_PORT:-19092}
controller_port=${CITYBRAIN_KAFKA_CONTROLLER_PORT:-19093}
secure_port=${CITYBRAIN_KAFKA_SECURE_PORT:-19094}
redis_port=${CITYBRAIN_REDIS_PORT:-16379}
redis_tls_port=${CITYBRAIN_REDIS_TLS_PORT:-16380}
cluster_port=${CITYBRAIN_REDIS_CLUSTER_PORT:-16390}
cluster_ports=("$cluster_port" "$((cluster_port + 1))" "$((cluster_port + 2))")
partitions=${CITYBRAIN_PARTITIONS:-4}
tls_dir=$run_dir/tls
kafka_dir=$run_dir/kafka
redis_dir=$run_dir/redis
classpath_file=$run_dir/kafka.classpath

log() { printf '[stack] %s\n' "$*" >&2; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

ensure_redis_installed() {
  command -v redis-server >/dev/null && return
  log "redis-server missing: installing the Debian package"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  # Debian starts its own service on 6379; ours runs on its own port.
}

kafka_classpath() {
  if [ ! -s "$classpath_file" ] || [ "$here/kafka/pom.xml" -nt "$classpath_file" ]; then
    log "resolving Kafka from Maven Central (cached in ~/.m2)"
    mvn -q -B -f "$here/kafka/pom.xml" dependency:build-classpath \
      -Dmdep.outputFile="$classpath_file" >&2
  fi
  cat "$classpath_file"
}

fail_with_log() {
  log "$1; last lines of $2:"
  tail -n 60 "$2" >&2 || true
  exit 1
}

tls_up() {
  # A CA of the stack's own, a certificate for 127.0.0.1 signed by it, and the users' passwords.
  [ -f "$tls_dir/broker.p12" ] && return
  if ! command -v openssl >/dev/null; then
    log "openssl missing: installing the Debian package"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl >/dev/null
  fi
  mkdir -p "$tls_dir" && chmod 700 "$tls_dir"
  (
    cd "$tls_dir"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=citybrain local CA" \
      -keyout ca-key.pem -out ca.pem
    openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout key.pem -out server.csr
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' > server.ext
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 3650 \
      -extfile server.ext -out cert.pem
    for name in kafka-password redis-password store-password; do
      head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$name"
    done
    openssl pkcs12 -export -in cert.pem -inkey key.pem -passout "file:store-password" -out broker.p12
    chmod 600 ./*
  ) > "$run_dir/tls.log" 2>&1 || fail_with_log "making the stack's certificates failed" "$run_dir/tls.log"
  log "certificates and passwords made in $tls_dir"
}

cluster_up() {
  # Three masters, durable as the single Redis is, their slots shared out once.
  local port
  for port in "${cluster_ports[@]}"; do
    mkdir -p "$run_dir/redis-cluster/$port"
    alive "$run_dir/redis-cluster/$port/pid" && continue
    port_open "$port" && { log "port $port is taken by another process"; exit 1; }
    redis-server --port "$port" --bind 127.0.0.1 --dir "$run_dir/redis-cluster/$port" --cluster-enabled yes \
      --cluster-config-file nodes.conf --appendonly yes --appendfsync everysec --save "" --daemonize yes \
      --pidfile "$run_dir/redis-cluster/$port/pid" --logfile "$run_dir/redis-cluster/$port/redis.log"
  done
  for port in "${cluster_ports[@]}"; do
    for _ in $(seq 1 600); do redis_ready "$port" && break; sleep 0.1; done
  done
  if redis-cli -p "$cluster_port" cluster info | grep -q 'cluster_known_nodes:1'; then
    redis-cli --cluster create "${cluster_ports[@]/#/127.0.0.1:}" --cluster-replicas 0 --cluster-yes \
      > "$run_dir/redis-cluster/create.log" 2>&1 || fail_with_log "creating the Redis Cluster failed" "$run_dir/redis-cluster/create.log"
  fi
  # Every master must see every slot served (a restarted one rejoins from its nodes.conf).
  for _ in $(seq 1 300); do
    local ok=0
    for port in "${cluster_ports[@]}"; do
      redis-cli -p "$port" cluster info | grep -q 'cluster_state:ok' && ok=$((ok + 1))
    done
    [ "$ok" = 3 ] && { log "redis cluster up on 127.0.0.1:${cluster_ports[*]}"; return; }
    sleep 0.1
  done
  fail_with_log "the Redis Cluster did not come up" "$run_dir/redis-cluster/$cluster_port/redis.log"
}

redis_user() {
  # The workers' ACL user: every key and channel, every command but the administrator's. The
  # password goes in on stdin (the last argument, with -x), not on a command line others can see.
  local password; password=$(cat "$tls_dir/redis-password")
  printf '>%s' "$password" | redis-cli -p "$redis_port" -x acl setuser citybrain reset on '~*' '&*' '+@all' '-@admin' >/dev/null
}

# Answering, and done loading its append-only file: until then it answers LOADING to everything.
redis_ready() {
  [ "$(redis-cli -p "$1" ping 2>/dev/null)" = PONG ]
}

redis_up() {
  ensure_redis_installed
  mkdir -p "$redis_dir"
  if alive "$redis_dir/pid" && redis_ready "$redis_port"; then
    # One started by an older version of this script kept nothing on disk: it does from now on.
    redis-cli -p "$redis_port" config set appendfsync everysec >/dev/null
    redis-cli -p "$redis_port" config set appendonly yes >/dev/null
    if port_open "$redis_tls_port"; then
      redis_user; log "redis already up on 127.0.0.1:$redis_port"; return
    fi
    # Nor had it a TLS port: restarted with one, once its append-only file holds everything.
    local info=""
    for _ in $(seq 1 300); do
      info=$(redis-cli -p "$redis_port" info persistence)
      [[ $info == *"aof_enabled:1"* && $info == *"aof_rewrite_in_progress:0"* \
         && $info == *"aof_rewrite_scheduled:0"* ]] && break
      sleep 0.2
    done
    [[ $info == *"aof_enabled:1"* && $info == *"aof_last_bgrewrite_status:ok"* && $info == *"aof_rewrite_in_progress:0"* ]] \
      || { log "redis has not written its append-only file; not restarting it (see $redis_dir/redis.log)"; exit 1; }
    log "restarting redis with a TLS port"
    stop_pid redis "$redis_dir/pid"
  fi
  port_open "$redis_port" && { log "port $redis_port is taken by another process"; exit 1; }
  # Durable: every write goes to the append-only file, which is flushed to disk once a second
  # (README, "Redis durability"). No RDB snapshots: the AOF is the copy.
  redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$redis_dir" \
    --appendonly yes --appendfsync everysec --save "" --daemonize yes --pidfile "$redis_dir/pid" \
    --logfile "$redis_dir/redis.log" --tls-port "$redis_tls_port" --tls-cert-file "$tls_dir/cert.pem" \
    --tls-key-file "$tls_dir/key.pem" --tls-ca-cert-file "$tls_dir/ca.pem" --tls-auth-clients no
  for _ in $(seq 1 600); do  # a large append-only file takes a while to load
    redis_ready "$redis_port" && { redis_user; log "redis up on 127.0.0.1:$redis_port (TLS on $redis_tls_port)"; return; }
    sleep 0.1
  done
  fail_with_log "redis did not answer" "$redis_dir/redis.log"
}

kafka_answers() {
  # A metadata round trip, not just an open port.
  "$python" - "$kafka_port" <<'PY' >/dev/null 2>&1
import sys
from kafka import KafkaAdminClient
admin = KafkaAdminClient(bootstrap_servers=f"127.0.0.1:{sys.argv[1]}", request_timeout_ms=3000)
admin.describe_cluster()
admin.close()
PY
}

kafka_user() {
  # The workers' SCRAM user, set through the plain listener (the broker has no authorizer).
  "$python" - "$kafka_port" "$tls_dir/kafka-password" <<'PY' >/dev/null
import sys
from kafka import KafkaAdminClient
from kafka.admin import UserScramCredentialUpsertion
admin = KafkaAdminClient(bootstrap_servers=f"127.0.0.1:{sys.argv[1]}")
password = open(sys.argv[2]).read().strip()
errors = admin.alter_user_scram_credentials([UserScramCredentialUpsertion("citybrain", "SCRAM-SHA-512", password)])
admin.close()
assert errors == {"citybrain": None}, errors
PY
}

kafka_up() {
  mkdir -p "$kafka_dir"
  if alive "$kafka_dir/pid" && kafka_answers; then
    if port_open "$secure_port"; then
      kafka_user; log "kafka already up on 127.0.0.1:$kafka_port"; return
    fi
    log "restarting kafka with a SASL_SSL listener"
    stop_pid kafka "$kafka_dir/pid"
  fi
  port_open "$kafka_port" && { log "port $kafka_port is taken by another process"; exit 1; }
  local cp; cp=$(kafka_classpath)
  local conf=$kafka_dir/server.properties
  sed -e "s|@KAFKA_PORT@|$kafka_port|g" -e "s|@CONTROLLER_PORT@|$controller_port|g" \
      -e "s|@DATA_DIR@|$kafka_dir/data|g" -e "s|@PARTITIONS@|$partitions|g" \
      -e "s|@SECURE_PORT@|$secure_port|g" -e "s|@TLS_DIR@|$tls_dir|g" \
      -e "s|@STORE_PASSWORD@|$(cat "$tls_dir/store-password")|g" \
      "$here/kafka/server.properties.in" > "$conf"
  local java_opts=(-Xms256m -Xmx512m -Dlog4j2.configurationFile="$here/kafka/log4j2.properties")
  if [ ! -f "$kafka_dir/data/meta.properties" ]; then
    java "${java_opts[@]}" -cp "$cp" kafka.tools.StorageTool format \
      -t "$(cat /proc/sys/kernel/random/uuid | tr -d - | head -c 22)" -c "$conf" \
      > "$kafka_dir/format.log" 2>&1 || fail_with_log "formatting the Kafka log dir failed" "$kafka_dir/format.log"
  fi
  nohup java "${java_opts[@]}" -cp "$cp" kafka.Kafka "$conf" > "$kafka_dir/kafka.log" 2>&1 &
  echo $! > "$kafka_dir/pid"
  for _ in $(seq 1 120); do
    alive "$kafka_dir/pid" || fail_with_log "kafka exited during start-up" "$kafka_dir/kafka.log"
    if port_open "$kafka_port" && kafka_answers; then
      kafka_user; log "kafka up on 127.0.0.1:$kafka_port (SASL_SSL on $secure_port)"; return
    fi
    sleep 0.5
  done
  fail_with_log "kafka did not answer within 60 s" "$kafka_dir/kafka.log"
}

stop_pid() {
  local name=$1 pidfile=$2
  if alive "$pidfile"; then
    local pid; pid=$(cat "$pidfile")
    kill "$pid"
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$pid" 2>/dev/null || true
    log "$name stopped"
  else
    log "$name not running"
  fi
  rm -f "$pidfile"
}

status() {
  local rc=0
  if alive "$kafka_dir/pid" && kafka_answers; then echo "kafka: up on 127.0.0.1:$kafka_port (logs $kafka_dir/kafka.log)"
  else echo "kafka: down"; rc=1; fi
  if alive "$redis_dir/pid" && redis_ready "$redis_port"; then echo "redis: up on 127.0.0.1:$redis_port (logs $redis_dir/redis.log)"
  else echo "redis: down"; rc=1; fi
  if redis-cli -p "$cluster_port" cluster info 2>/dev/null | grep -q 'cluster_state:ok'; then
    echo "redis cluster: up on 127.0.0.1:${cluster_ports[*]}"
  else echo "redis cluster: down"; rc=1; fi
  return $rc
}

# The readiness check needs kafka-python: the project's environment has it (ops/setup.sh).
venv_python=${CITYBRAIN_VENV:-$(dirname "$here")/.venv}/bin/python
[ -x "$venv_python" ] || venv_python=python3
python=${CITYBRAIN_PYTHON:-$venv_python}
case "${1:-}" in
  up) tls_up; redis_up; cluster_up; kafka_up; status ;;
  down)
    stop_pid kafka "$kafka_dir/pid"; stop_pid redis "$redis_dir/pid"
    for port in "${cluster_ports[@]}"; do stop_pid "redis $port" "$run_dir/redis-cluster/$port/pid"; done ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
