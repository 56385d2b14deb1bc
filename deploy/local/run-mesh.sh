#!/usr/bin/env bash
# Runs a two-data-centre ssemesh mesh on this machine, every process on
# 127.0.0.1: two Consul dev agents joined over WAN, a synthetic SSE back end
# registered in dc1, and ssemesh nodes as separate processes.
#
#   deploy/local/run-mesh.sh [up]     build, start everything, print the URLs
#   deploy/local/run-mesh.sh down     stop everything and remove the state
#   deploy/local/run-mesh.sh status   list the processes and whether they run
#
# Layout:  dc1: root-1, root-2 (tier 0), relay-1 (tier 1), leaf-1 (tier 2)
#          dc2: relay-2 (tier 1), leaf-2, leaf-3 (tier 2); no root, so the
#          stream crosses into dc2 through exactly one node.
#
# Environment:
#   MESH_STATE   state directory: pids, logs, configs (default /tmp/ssemesh-local)
#   MESH_PORT    first port of the block the mesh uses (default 27000; the
#                block spans MESH_PORT .. MESH_PORT+499)
#   MESH_RATE    back-end events per second (default 1)
#   MESH_DC2_STATIC  1 (default): dc2 nodes also carry the back end in their
#                config, pinned to dc1; 0: they rely on Consul discovery alone
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
state="${MESH_STATE:-/tmp/ssemesh-local}"
base="${MESH_PORT:-27000}"
rate="${MESH_RATE:-1}"
dc2_static="${MESH_DC2_STATIC:-1}"
host=127.0.0.1
stream_path=/webservice/escenic/changelog/sse

log() { printf 'run-mesh: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

# Port plan, all inside [base, base+499].
consul_ports() { # dc index (0 or 1) -> "http serf_lan serf_wan server"
	local o=$((base + 10 * $1))
	echo "$((o + 0)) $((o + 1)) $((o + 2)) $((o + 3))"
}
backend_port=$((base + 50))
# Nodes: id dc tier; node i gets client base+100+i, admin base+200+i,
# gossip base+300+i.
nodes=(
	"root-1 dc1 0"
	"root-2 dc1 0"
	"relay-1 dc1 1"
	"leaf-1 dc1 2"
	"relay-2 dc2 1"
	"leaf-2 dc2 2"
	"leaf-3 dc2 2"
)
client_port() { echo $((base + 100 + $1)); }
admin_port() { echo $((base + 200 + $1)); }
gossip_port() { echo $((base + 300 + $1)); }

# start NAME CMD... runs a process in the background with its own log and
# pid file; setsid gives it its own process group so down can end exactly it.
start() {
	local name=$1
	shift
	setsid "$@" >"${state}/logs/${name}.log" 2>&1 </dev/null &
	echo $! >"${state}/pids/${name}.pid"
	log "started ${name} (pid $!)"
}

# wait_for WHAT SECONDS CMD... polls CMD until it succeeds.
wait_for() {
	local what=$1 secs=$2
	shift 2
	local deadline=$((SECONDS + secs))
	until "$@" >/dev/null 2>&1; do
		if ((SECONDS >= deadline)); then
			die "timed out after ${secs}s waiting for ${what}; logs in ${state}/logs"
		fi
		sleep 0.2
	done
}

port_free() { ! (exec 3<>"/dev/tcp/${host}/$1") 2>/dev/null; }

has_leader() { [[ "$(curl -fsS "http://${host}:$1/v1/status/leader")" == *:* ]]; }
wan_joined() { curl -fsS "http://${host}:$1/v1/catalog/datacenters" | grep -q '"dc2"'; }
ready() { curl -fsS "http://${host}:$1/readyz"; }

up() {
	[[ -e "${state}/pids" ]] && die "${state} exists: a mesh may be running (run '$0 down' first)"
	command -v curl >/dev/null || die "curl is required"
	local p
	for p in $(consul_ports 0) $(consul_ports 1) "${backend_port}"; do
		port_free "$p" || die "port ${p} on ${host} is in use (set MESH_PORT to another block)"
	done
	for i in "${!nodes[@]}"; do
		for p in "$(client_port "$i")" "$(admin_port "$i")" "$(gossip_port "$i")"; do
			port_free "$p" || die "port ${p} on ${host} is in use (set MESH_PORT to another block)"
		done
	done

	log "building ./bin/ssemesh and ./bin/ssemesh-bench"
	(cd "${repo}" && GOTOOLCHAIN=local go build -o bin/ssemesh ./cmd/ssemesh && GOTOOLCHAIN=local go build -o bin/ssemesh-bench ./cmd/ssemesh-bench)
	local consul
	consul="$("${repo}/deploy/consul/build.sh" | tail -n1)"
	[[ -x "${consul}" ]] || die "no Consul binary from deploy/consul/build.sh"

	mkdir -p "${state}/pids" "${state}/logs" "${state}/config"

	# Consul: two dev agents, dc2 joins dc1 over WAN.
	local dc i http lan wan srv
	for i in 0 1; do
		dc="dc$((i + 1))"
		read -r http lan wan srv <<<"$(consul_ports "$i")"
		local args=(agent -dev -datacenter "${dc}" -node "consul-${dc}" -bind "${host}" -client "${host}"
			-http-port "${http}" -dns-port -1 -grpc-port -1 -grpc-tls-port -1
			-serf-lan-port "${lan}" -serf-wan-port "${wan}" -server-port "${srv}")
		if ((i == 1)); then
			args+=(-retry-join-wan "${host}:$(consul_ports 0 | cut -d' ' -f3)")
		fi
		start "consul-${dc}" "${consul}" "${args[@]}"
		wait_for "consul ${dc} leader" 60 has_leader "${http}"
	done
	local http1 http2
	http1="$(consul_ports 0 | cut -d' ' -f1)"
	http2="$(consul_ports 1 | cut -d' ' -f1)"
	wait_for "WAN join of dc1 and dc2" 60 wan_joined "${http1}"

	# The back end, registered in dc1's Consul as ssemesh discovers them.
	start backend "${repo}/bin/ssemesh-bench" backend --listen "${host}:${backend_port}" --rate "${rate}" --format changelog
	wait_for "back end" 20 port_in_use "${backend_port}"
	curl -fsS -X PUT "http://${host}:${http1}/v1/agent/service/register" --data @- >/dev/null <<JSON
{"ID": "changelog-1", "Name": "changelog", "Address": "${host}", "Port": ${backend_port},
 "Tags": ["ssemesh"], "Meta": {"ssemesh-path": "${stream_path}"}}
JSON
	log "registered back end changelog (${host}:${backend_port}${stream_path}) in dc1"

	# dc2 has no back end in its own Consul: its nodes may carry it in
	# their config, pinned to dc1 so that the stream's owner is a dc1 root.
	cat >"${state}/config/dc2.yaml" <<YAML
backends:
  - name: changelog
    uri: http://${host}:${backend_port}${stream_path}
    dc: dc1
YAML

	# The nodes prove membership to each other with one secret; a fresh
	# one per run unless the caller exported one.
	export SSEMESH_MESH_SECRET="${SSEMESH_MESH_SECRET:-$(head -c 32 /dev/urandom | base64)}"

	# Nodes: the first node of each data centre is the others' gossip seed.
	local id tier seed1="" seed2="" seed consul_http
	for i in "${!nodes[@]}"; do
		read -r id dc tier <<<"${nodes[$i]}"
		local args=(run --listen "${host}:$(client_port "$i")" --admin "${host}:$(admin_port "$i")"
			--node-id "${id}" --dc "${dc}" --tier "${tier}" --gossip "${host}:$(gossip_port "$i")")
		if [[ "${dc}" == dc1 ]]; then
			consul_http="${http1}"
			seed="${seed1}"
			[[ -z "${seed1}" ]] && seed1="${host}:$(gossip_port "$i")"
		else
			consul_http="${http2}"
			seed="${seed2}"
			[[ -z "${seed2}" ]] && seed2="${host}:$(gossip_port "$i")"
			[[ "${dc2_static}" == 1 ]] && args+=(--config "${state}/config/dc2.yaml")
		fi
		args+=(--consul "${host}:${consul_http}")
		[[ -n "${seed}" ]] && args+=(--seed "${seed}")
		start "${id}" "${repo}/bin/ssemesh" "${args[@]}"
	done
	for i in "${!nodes[@]}"; do
		read -r id dc tier <<<"${nodes[$i]}"
		wait_for "${id} ready" 30 ready "$(admin_port "$i")"
	done

	echo
	echo "ssemesh local mesh is up (state and logs in ${state})"
	echo
	printf '%-8s %-4s %-4s %-32s %-24s\n' node dc tier "client URL" "admin"
	for i in "${!nodes[@]}"; do
		read -r id dc tier <<<"${nodes[$i]}"
		printf '%-8s %-4s %-4s %-32s %-24s\n' "${id}" "${dc}" "${tier}" "http://${host}:$(client_port "$i")" "http://${host}:$(admin_port "$i")"
	done
	echo
	echo "consul dc1: http://${host}:${http1}/ui   consul dc2: http://${host}:${http2}/ui"
	echo "back end:   http://${host}:${backend_port}${stream_path}"
	echo
	echo "stream through a dc2 leaf:"
	echo "  curl -N http://${host}:$(client_port 5)${stream_path}"
	echo "the tree (both data centres, from any node):"
	echo "  ${repo}/bin/ssemesh topology --admin ${host}:$(admin_port 5)"
	echo "  curl -s 'http://${host}:$(admin_port 5)/v1/topology?format=text'"
	echo "stop:"
	echo "  $0 down"
}

port_in_use() { ! port_free "$1"; }

# stop_group NAME... ends the process groups started for the names at once:
# TERM (each node drains gracefully), then KILL whatever still runs after
# 20 s. Stopping nodes one by one would add their drain periods up.
stop_group() {
	local name f pid pids=()
	for name in "$@"; do
		f="${state}/pids/${name}.pid"
		[[ -f "$f" ]] || continue
		pid="$(cat "$f")"
		if kill -0 "${pid}" 2>/dev/null; then
			kill -TERM -- "-${pid}" 2>/dev/null || kill -TERM "${pid}" 2>/dev/null || true
			pids+=("${pid}")
		fi
	done
	local deadline=$((SECONDS + 20)) running
	while :; do
		running=()
		for pid in "${pids[@]}"; do
			kill -0 "${pid}" 2>/dev/null && running+=("${pid}")
		done
		((${#running[@]} == 0 || SECONDS >= deadline)) && break
		sleep 0.2
	done
	for pid in "${running[@]}"; do
		log "pid ${pid} did not stop in 20s: killing"
		kill -KILL -- "-${pid}" 2>/dev/null || kill -KILL "${pid}" 2>/dev/null || true
	done
	for name in "$@"; do
		[[ -f "${state}/pids/${name}.pid" ]] && log "stopped ${name}"
		rm -f "${state}/pids/${name}.pid"
	done
}

down() {
	[[ -d "${state}" ]] || { log "nothing to stop (${state} does not exist)"; return 0; }
	local n names=() f
	for n in "${nodes[@]}"; do
		names+=("${n%% *}")
	done
	# Nodes first, then the back end, then Consul, so nodes deregister
	# while their agent still runs.
	stop_group "${names[@]}"
	stop_group backend
	stop_group consul-dc2 consul-dc1
	for f in "${state}"/pids/*.pid; do
		[[ -f "$f" ]] && stop_group "$(basename "$f" .pid)"
	done
	rm -rf "${state}"
	log "removed ${state}"
}

status() {
	[[ -d "${state}/pids" ]] || { echo "not running (${state} does not exist)"; return 0; }
	local f pid
	for f in "${state}"/pids/*.pid; do
		pid="$(cat "$f")"
		if kill -0 "${pid}" 2>/dev/null; then
			printf '%-12s pid %-8s running\n' "$(basename "$f" .pid)" "${pid}"
		else
			printf '%-12s pid %-8s exited (see %s)\n' "$(basename "$f" .pid)" "${pid}" "${state}/logs/$(basename "$f" .pid).log"
		fi
	done
}

case "${1:-up}" in
up) up ;;
down) down ;;
status) status ;;
*) die "usage: $0 [up|down|status]" ;;
esac
