#!/usr/bin/env bash
# Faults across data centres, on one machine: every host of a two-data-centre
# mesh gets a network namespace of its own, and the link between the data
# centres can be cut or shaped.
#
#   scripts/netns-faults.sh [run]       the whole drill: builds, runs the Go test
#                                       test/netns (TestFaultsAcrossDataCentres),
#                                       prints its table and the run's duration,
#                                       removes everything on exit
#   scripts/netns-faults.sh up          build the namespaces and links only
#   scripts/netns-faults.sh down        stop every process inside the drill's
#                                       namespaces and delete them
#   scripts/netns-faults.sh hosts       the host table: NAME DC ADDRESS
#   scripts/netns-faults.sh partition on|off
#                                       drop every packet between the data centres
#                                       (a silent black hole, both ways)
#   scripts/netns-faults.sh shape on [DELAY [LOSS]] | shape off
#                                       delay every packet crossing between the data
#                                       centres by DELAY (default 50ms, each way) and
#                                       drop a LOSS fraction of them (default 0.01)
#   scripts/netns-faults.sh status      namespaces, rules on the link, delay process
#
# Layout (namespace = ssm-NAME; /24 per data centre):
#
#   dc1  10.91.1.0/24, switch ssm-sw1       dc2  10.91.2.0/24, switch ssm-sw2
#     consul1  .10  Consul server dc1         consul2  .10  Consul server dc2
#     backend  .20  synthetic SSE back end    relay2   .11  ssemesh tier 1
#     root1    .11  ssemesh tier 0            leaf2a   .12  ssemesh tier 2
#     leaf1a   .12  ssemesh tier 2            leaf2b   .13  ssemesh tier 2
#     leaf1b   .13  ssemesh tier 2            clients2 .50  SSE clients
#     clients1 .50  SSE clients
#
#   ssm-wan  the router between the data centres (10.91.1.1 and 10.91.2.1);
#            every host's default route. Faults are iptables rules in its
#            FORWARD chain, so they touch cross-DC traffic only.
#   ssm-obs  the observer: a leg on each switch (10.91.1.250, 10.91.2.250),
#            no forwarding. The drill reads admin APIs and Consul through it,
#            so observing never crosses the link under test.
#
# The kernel here has no netem (CONFIG_NET_SCH_NETEM is not set), so "shape"
# uses iptables instead: the statistic match drops LOSS of the packets, and
# an NFQUEUE rule hands the rest to `faultkit delay` (test/netns/faultkit),
# which accepts each one DELAY after it arrived, in order.
#
# Environment:
#   SSM_STATE     directory for the delay process's pid and log (default /tmp/ssm-netns)
#   SSM_FAULTKIT  the faultkit binary (default: built into SSM_STATE/bin)
#   SSM_IPTABLES  iptables command for the router (default iptables-legacy when
#                 present, else iptables)
#
# Everything the drill creates carries the prefix ssm-; `down`, and `run` at
# start and on exit, remove whatever has it, also what an interrupted run left.
# Needs root, iproute2 (ip, ss) and iptables.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
prefix=ssm-
state="${SSM_STATE:-/tmp/ssm-netns}"
net1=10.91.1
net2=10.91.2
# name dc last-octet
hosts=(
	"consul1 dc1 10"
	"backend dc1 20"
	"root1 dc1 11"
	"leaf1a dc1 12"
	"leaf1b dc1 13"
	"clients1 dc1 50"
	"consul2 dc2 10"
	"relay2 dc2 11"
	"leaf2a dc2 12"
	"leaf2b dc2 13"
	"clients2 dc2 50"
)

log() { printf 'netns-faults: %s\n' "$*" >&2; }
die() {
	log "$*"
	exit 1
}

iptables_cmd() {
	if [[ -n "${SSM_IPTABLES:-}" ]]; then
		echo "${SSM_IPTABLES}"
	elif command -v iptables-legacy >/dev/null 2>&1; then
		echo iptables-legacy
	else
		echo iptables
	fi
}

# wan IPTABLES-ARGS... runs iptables inside the router namespace.
wan() { ip netns exec "${prefix}wan" "$(iptables_cmd)" -w 5 "$@"; }

require() {
	((EUID == 0)) || die "must run as root (network namespaces)"
	local c
	for c in ip ss "$(iptables_cmd)"; do
		command -v "$c" >/dev/null 2>&1 || die "$c is required"
	done
}

net_of() { [[ $1 == dc1 ]] && echo "${net1}" || echo "${net2}"; }

print_hosts() {
	local h name dc octet
	for h in "${hosts[@]}"; do
		read -r name dc octet <<<"$h"
		echo "${name} ${dc} $(net_of "${dc}").${octet}"
	done
}

drill_namespaces() { ip netns list | awk '{print $1}' | grep "^${prefix}" || true; }

# down stops every process inside the drill's namespaces (by pid: only the
# drill starts processes there), then deletes the namespaces. Bounded: TERM,
# at most 5 s, then KILL.
down() {
	local ns pids=() p
	for ns in $(drill_namespaces); do
		for p in $(ip netns pids "${ns}" 2>/dev/null); do
			pids+=("$p")
		done
	done
	if ((${#pids[@]} > 0)); then
		kill -TERM "${pids[@]}" 2>/dev/null || true
		local i
		for ((i = 0; i < 50; i++)); do
			local alive=0
			for p in "${pids[@]}"; do
				kill -0 "$p" 2>/dev/null && alive=1
			done
			((alive == 0)) && break
			sleep 0.1
		done
		kill -KILL "${pids[@]}" 2>/dev/null || true
	fi
	for ns in $(drill_namespaces); do
		ip netns del "${ns}" 2>/dev/null || log "could not delete ${ns}"
	done
	rm -f "${state}/delay.pid"
	if [[ -n "$(drill_namespaces)" ]]; then
		die "namespaces left over: $(drill_namespaces | tr '\n' ' ')"
	fi
}

add_ns() {
	ip netns add "${prefix}$1"
	ip -n "${prefix}$1" link set lo up
}

# attach NS SWITCH PORT IFNAME ADDR: a veth from NS (named IFNAME, with
# ADDR/24) to a port of SWITCH's bridge.
attach() {
	local ns=$1 sw=$2 port=$3 ifname=$4 addr=$5
	ip link add "${ifname}" netns "${prefix}${ns}" type veth peer name "${port}" netns "${prefix}${sw}"
	ip -n "${prefix}${sw}" link set "${port}" master br0 up
	ip -n "${prefix}${ns}" addr add "${addr}/24" dev "${ifname}"
	ip -n "${prefix}${ns}" link set "${ifname}" up
}

up() {
	[[ -z "$(drill_namespaces)" ]] || die "namespaces with prefix ${prefix} exist: run '$0 down' first"
	local sw
	for sw in sw1 sw2; do
		add_ns "${sw}"
		ip -n "${prefix}${sw}" link add br0 type bridge
		ip -n "${prefix}${sw}" link set br0 up
	done
	add_ns wan
	attach wan sw1 p-wan wan1 "${net1}.1"
	attach wan sw2 p-wan wan2 "${net2}.1"
	ip netns exec "${prefix}wan" sysctl -qw net.ipv4.ip_forward=1
	add_ns obs
	attach obs sw1 p-obs obs1 "${net1}.250"
	attach obs sw2 p-obs obs2 "${net2}.250"
	ip netns exec "${prefix}obs" sysctl -qw net.ipv4.ip_forward=0
	local h name dc octet net
	for h in "${hosts[@]}"; do
		read -r name dc octet <<<"$h"
		net="$(net_of "${dc}")"
		add_ns "${name}"
		attach "${name}" "sw${dc#dc}" "p-${name}" eth0 "${net}.${octet}"
		ip -n "${prefix}${name}" route add default via "${net}.1"
	done
	log "up: $(drill_namespaces | wc -l) namespaces, dc1 ${net1}.0/24, dc2 ${net2}.0/24, router ${prefix}wan"
}

partition() {
	case "${1:-}" in
	on)
		wan -C FORWARD -m comment --comment ssm-partition -j DROP 2>/dev/null ||
			wan -I FORWARD 1 -m comment --comment ssm-partition -j DROP
		log "partition on: nothing crosses between dc1 and dc2"
		;;
	off)
		local i
		for ((i = 0; i < 10; i++)); do
			wan -D FORWARD -m comment --comment ssm-partition -j DROP 2>/dev/null || break
		done
		log "partition off"
		;;
	*) die "usage: $0 partition on|off" ;;
	esac
}

faultkit_bin() {
	if [[ -n "${SSM_FAULTKIT:-}" ]]; then
		echo "${SSM_FAULTKIT}"
		return
	fi
	mkdir -p "${state}/bin"
	(cd "${repo}" && GOTOOLCHAIN="${GOTOOLCHAIN:-local}" go build -o "${state}/bin/faultkit" ./test/netns/faultkit) >&2
	echo "${state}/bin/faultkit"
}

stop_delay() {
	[[ -f "${state}/delay.pid" ]] || return 0
	local pid i
	pid="$(cat "${state}/delay.pid")"
	rm -f "${state}/delay.pid"
	kill -TERM "${pid}" 2>/dev/null || return 0
	for ((i = 0; i < 30; i++)); do
		kill -0 "${pid}" 2>/dev/null || return 0
		sleep 0.1
	done
	kill -KILL "${pid}" 2>/dev/null || true
}

shape() {
	case "${1:-}" in
	on)
		local delay="${2:-50ms}" loss="${3:-0.01}" bin i
		[[ "${delay}" =~ ^[0-9]+ms$ ]] || die "DELAY must be like 50ms, got ${delay}"
		[[ "${loss}" =~ ^0(\.[0-9]+)?$ ]] || die "LOSS must be a fraction like 0.01, got ${loss}"
		shape off
		bin="$(faultkit_bin)"
		mkdir -p "${state}"
		: >"${state}/delay.log"
		ip netns exec "${prefix}wan" "${bin}" delay --queue 0 --delay "${delay}" >>"${state}/delay.log" 2>&1 &
		echo $! >"${state}/delay.pid"
		for ((i = 0; i < 50; i++)); do
			grep -q 'delaying queued packets' "${state}/delay.log" && break
			kill -0 "$(cat "${state}/delay.pid")" 2>/dev/null || die "delay process exited: $(cat "${state}/delay.log")"
			sleep 0.1
		done
		grep -q 'delaying queued packets' "${state}/delay.log" || die "delay process did not start: $(cat "${state}/delay.log")"
		if [[ "${loss}" != 0 ]]; then
			wan -A FORWARD -m comment --comment ssm-shape -m statistic --mode random --probability "${loss}" -j DROP
		fi
		wan -A FORWARD -m comment --comment ssm-shape -j NFQUEUE --queue-num 0
		log "shape on: ${delay} each way, loss ${loss} each way"
		;;
	off)
		local rule i
		for ((i = 0; i < 20; i++)); do
			rule="$(wan -S FORWARD | grep -m1 -- '--comment ssm-shape' || true)"
			[[ -n "${rule}" ]] || break
			# -S prints "-A FORWARD ..."; the same words after -D delete it.
			read -r -a words <<<"${rule#-A }"
			wan -D "${words[@]}"
		done
		stop_delay
		log "shape off"
		;;
	*) die "usage: $0 shape on [DELAY [LOSS]] | off" ;;
	esac
}

status() {
	echo "namespaces: $(drill_namespaces | tr '\n' ' ')"
	if ip netns list | grep -q "^${prefix}wan"; then
		echo "router FORWARD chain:"
		wan -S FORWARD
	fi
	if [[ -f "${state}/delay.pid" ]] && kill -0 "$(cat "${state}/delay.pid")" 2>/dev/null; then
		echo "delay process: pid $(cat "${state}/delay.pid")"
	fi
}

run_drill() {
	command -v go >/dev/null 2>&1 || die "go is required"
	test_pid=""
	# On exit, interrupted or not: end the drill's test process (its
	# children die with it), then remove the namespaces.
	trap '[[ -n "${test_pid:-}" ]] && kill -TERM "${test_pid}" 2>/dev/null; wait 2>/dev/null; down' EXIT
	trap 'exit 130' INT TERM
	down
	local consul
	consul="$("${repo}/deploy/consul/build.sh" | tail -n1)"
	[[ -x "${consul}" ]] || die "no Consul binary from deploy/consul/build.sh"
	mkdir -p "${state}/bin"
	(cd "${repo}" && GOTOOLCHAIN="${GOTOOLCHAIN:-local}" go test -c -o "${state}/bin/netns.test" ./test/netns/)
	local start=$SECONDS rc=0
	log "running the drill (test/netns, TestFaultsAcrossDataCentres)"
	# A test binary runs in its package's directory, as under go test.
	(cd "${repo}/test/netns" && exec env SSEMESH_NETNS=1 SSEMESH_CONSUL_BIN="${consul}" SSM_STATE="${state}" \
		"${state}/bin/netns.test" -test.v -test.count=1 -test.timeout 10m -test.run '^TestFaultsAcrossDataCentres$') &
	test_pid=$!
	wait "${test_pid}" || rc=$?
	test_pid=""
	log "drill finished in $((SECONDS - start)) s (exit ${rc}); logs in ${state}/run/logs"
	return "${rc}"
}

mkdir -p "${state}"
case "${1:-run}" in
run) require && run_drill ;;
up) require && up ;;
down) require && down ;;
hosts) print_hosts ;;
partition) require && partition "${2:-}" ;;
shape) require && shape "${@:2}" ;;
status) require && status ;;
*) die "usage: $0 [run|up|down|hosts|partition on|off|shape on [DELAY [LOSS]]|shape off|status]" ;;
esac
