#!/usr/bin/env bash
# Load-test a tree of ssemesh nodes on this machine: the bench back end,
# ROOTS roots, RELAYS relays and LEAVES leaves joined by gossip on
# loopback, with the clients spread over the leaves.
#
#   scripts/bench-tree.sh [LEAVES] [CLIENTS] [RATE] [SIZE] [DURATION]
#
#   LEAVES    leaf nodes the clients are spread over (default 3)
#   CLIENTS   SSE clients in total over all leaves (default 6000)
#   RATE      events per second from the back end (default 1)
#   SIZE      event payload in bytes (default 200)
#   DURATION  measurement window, e.g. 60 or 60s (default 30s)
#
# The load generator drives every leaf at once and fails over between them
# as a browser behind a load balancer would: after a dropped stream or a
# refusal it reconnects with Last-Event-ID to another leaf, after the
# stream's retry: value (or --retry) with ±50% jitter, honouring
# Retry-After. It prints one table per leaf and in total (loss and
# duplicates per client across failovers, latency, reconnects, refusals by
# status and error code), each node's RSS and CPU, and the back end's
# connection count sampled every second: exactly 1 in a healthy tree.
#
# Environment:
#   ROOTS=1|2          roots (tier 0); RELAYS=N relays (tier 1) between
#                      them and the leaves (default 0)
#   MAX_CLIENTS=19900  limits.max_clients of every leaf (below the open-file
#                      cap of a process, 20,000 here)
#   DRAIN=10s          drain of every node (graceful stop)
#   RETRY_AFTER=5      limits.retry_after: Retry-After of a 503 max_clients
#   ADMIT_RATE=0, ADMIT_BURST=500
#                      limits.admit of every node: new subscribers a second
#                      once the burst is spent (0, the default: not paced)
#   STORM=kill|restart|full, STORM_AT=10 (seconds into the window),
#   STORM_LEAF=0 (the leaf it hits):
#     kill     kill -9 the leaf; its clients fail over to the others. The
#              report shows when 99% and 100% of the clients were receiving
#              again, the peak rate of new sessions each leaf accepted,
#              refusals by reason, events lost (0: the others replay from
#              their buffers) and the back end's connections (still 1).
#     restart  SIGTERM the leaf (it drains over DRAIN, telling each client
#              when to come back with a jittered retry:), then start it
#              again; the report shows the reconnect spread: peak rate of
#              new sessions against the average.
#     full     start the leaf with max_clients FULL_MAX_CLIENTS (default a
#              quarter of its share, or more when the other leaves cannot
#              hold the rest at MAX_CLIENTS: what they cannot hold plus 2%
#              of the clients): it refuses the rest with 503
#              max_clients and Retry-After, and they go to the others; with
#              CHURN (default 10%/min here) clients keep arriving, and the
#              full leaf's refusals per second stay bounded because each
#              refused client waits Retry-After.
#   CHURN=5%/min       clients reconnecting of their own accord (--churn)
#   RETRY=500ms        reconnection time before the node sends retry:
#   RAMP, SETTLE       seconds over which the clients connect (default one
#                      per 500 clients, at least 5) and after which the
#                      window starts (default 2; 10 past 20,000 clients)
#   BENCH_FLAGS        further flags for "ssemesh-bench load"
#   PROFILE=leaf-0     turn on admin.pprof on every node and take a CPU
#                      profile of that node over PROFILE_SECONDS (default
#                      20) from PROFILE_AT (default 10) seconds into the
#                      window, to LOGDIR/NODE.cpu.pprof, and a heap profile
#                      right after it (NODE.heap.pprof); read them with
#                      go tool pprof -top bin/ssemesh FILE
#
# Ports (all on 127.0.0.1), each plus PORT_OFFSET (default 0): back end
# 7099; root r: client 8100+r, admin 9100+r, gossip 7100+r; relay x:
# 8150+x, 9150+x, 7150+x; leaf i: 8200+i, 9200+i, 7200+i. None is one of
# scripts/bench.sh's, so both can run at once (though not measure well).
# Logs, configuration, PID files and the JSON report are
# kept in a directory under TMPDIR, named at the end. Everything started is
# stopped on exit, within about 20 s.
#
# scripts/soak.sh sources this file for its functions (tree_*); sourced, it
# only defines them.

STREAM_PATH=/bench
PORT_OFFSET=${PORT_OFFSET:-0}
[[ $PORT_OFFSET =~ ^[0-9]+$ ]] || { echo "PORT_OFFSET must be a number" >&2; exit 2; }
BACKEND_ADDR=127.0.0.1:$((7099 + PORT_OFFSET))

# tree_die MESSAGE: print to stderr and exit 1.
tree_die() {
	echo "$*" >&2
	exit 1
}

# tree_build: build ./bin/ssemesh and ./bin/ssemesh-bench.
tree_build() {
	mkdir -p bin
	echo "building ./bin/ssemesh and ./bin/ssemesh-bench" >&2
	GOTOOLCHAIN=local go build -o bin/ssemesh ./cmd/ssemesh
	GOTOOLCHAIN=local go build -o bin/ssemesh-bench ./cmd/ssemesh-bench
}

# tree_config: the configuration every node shares. Per-address limits
# are off, since the clients share a few source addresses; gossip runs
# with the fast timings of loopback.
tree_config() {
	cat >"$LOGDIR/node.yaml" <<-YAML
		limits:
		  per_ip: {connections: 0, new_streams: 0}
		  retry_after: ${RETRY_AFTER:-5}
		  admit: {rate: ${ADMIT_RATE:-0}, burst: ${ADMIT_BURST:-500}}
		drain: ${DRAIN:-10s}
		mesh:
		  secret: $(head -c 32 /dev/urandom | base64)
		  gossip: {fast: true}
	YAML
	if [[ -n ${PROFILE:-} ]]; then
		echo "admin: {pprof: true}" >>"$LOGDIR/node.yaml"
	fi
}

# tree_profile NODE DELAY SECONDS: after DELAY seconds, take a CPU profile
# of the node over SECONDS, then a heap profile, into LOGDIR.
tree_profile() {
	local admin
	admin=$(cat "$LOGDIR/$1.admin")
	sleep "$2"
	curl -sf -o "$LOGDIR/$1.cpu.pprof" "http://$admin/debug/pprof/profile?seconds=$3" ||
		echo "profile of $1 failed" >&2
	curl -sf -o "$LOGDIR/$1.heap.pprof" "http://$admin/debug/pprof/heap" || true
	echo "profiles of $1: $LOGDIR/$1.cpu.pprof, $LOGDIR/$1.heap.pprof" >&2
}

# tree_add NAME TIER CLIENT_PORT ADMIN_PORT GOSSIP_PORT [MAX_CLIENTS]:
# write the node's launcher, which records its own PID in NAME.pid and
# becomes the node, logging to NAME.log.
tree_add() {
	local name=$1 tier=$2 max=${6:-} o=$PORT_OFFSET
	set -- "$1" "$2" $(($3 + o)) $(($4 + o)) $(($5 + o))
	echo "127.0.0.1:$3" >"$LOGDIR/$name.listen"
	echo "127.0.0.1:$4" >"$LOGDIR/$name.admin"
	cat >"$LOGDIR/$name.sh" <<-SH
		#!/bin/sh
		cd "$PWD" || exit 1
		echo \$\$ >"$LOGDIR/$name.pid"
		exec ./bin/ssemesh run --config "$LOGDIR/node.yaml" --node-id "$name" --tier "$tier" \\
			--listen 127.0.0.1:$3 --admin 127.0.0.1:$4 --gossip 127.0.0.1:$5 --seed 127.0.0.1:$((7100 + PORT_OFFSET)) \\
			--backend "bench=http://$BACKEND_ADDR$STREAM_PATH" ${max:+--max-clients $max} </dev/null >>"$LOGDIR/$name.log" 2>&1
	SH
	chmod +x "$LOGDIR/$name.sh"
	TREE_NODES+=("$name")
}

# tree_pid NAME: the node's current PID (empty if none).
tree_pid() { cat "$LOGDIR/$1.pid" 2>/dev/null || true; }

# tree_alive PID: whether the process runs (a zombie does not).
tree_alive() {
	[[ -n $1 ]] && kill -0 "$1" 2>/dev/null && ! grep -q '^[0-9]* (.*) Z' "/proc/$1/stat" 2>/dev/null
}

# tree_wait_port HOST:PORT NAME: wait up to 30 s for the node's listener.
tree_wait_port() {
	local host=${1%:*} port=${1##*:} _
	for _ in $(seq 300); do
		if ! tree_alive "$(tree_pid "$2")"; then
			echo "$2 exited; the end of its log:" >&2
			tail -20 "$LOGDIR/$2.log" >&2
			exit 1
		fi
		(exec 3<>"/dev/tcp/$host/$port") 2>/dev/null && return 0
		sleep 0.1
	done
	tree_die "$2 is not listening on $1 after 30 s"
}

# tree_start NAME: start the node and wait for its listener.
tree_start() {
	local addr
	addr=$(cat "$LOGDIR/$1.listen")
	if (exec 3<>"/dev/tcp/${addr%:*}/${addr##*:}") 2>/dev/null; then
		tree_die "$addr, where $1 is to listen, is taken (a process left from an earlier run?)"
	fi
	rm -f "$LOGDIR/$1.pid"
	"$LOGDIR/$1.sh" &
	disown
	local _
	for _ in $(seq 50); do
		[[ -s $LOGDIR/$1.pid ]] && break
		sleep 0.1
	done
	tree_wait_port "$addr" "$1"
}

# tree_stop NAME SIGNAL [SECONDS]: signal the node and wait for it to exit
# (default 60 s), then kill it for good.
tree_stop() {
	local pid _
	pid=$(tree_pid "$1")
	[[ -n $pid ]] || return 0
	kill "-$2" "$pid" 2>/dev/null || return 0
	for _ in $(seq $((${3:-60} * 10))); do
		tree_alive "$pid" || return 0
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
}

# The storms, run by the load generator at STORM_AT (through
# LOGDIR/storm.sh); each prints what it did, with the time, to stderr.
tree_kill() {
	echo "$(date +%T.%N | cut -c1-12) storm: kill -9 $1 (pid $(tree_pid "$1"))" >&2
	kill -KILL "$(tree_pid "$1")"
}

tree_restart() {
	echo "$(date +%T.%N | cut -c1-12) storm: SIGTERM $1 (pid $(tree_pid "$1")), draining" >&2
	tree_stop "$1" TERM
	echo "$(date +%T.%N | cut -c1-12) storm: $1 stopped; starting it again" >&2
	tree_start "$1"
	echo "$(date +%T.%N | cut -c1-12) storm: $1 is back (pid $(tree_pid "$1"))" >&2
}

# tree_backend RATE SIZE: start the bench back end.
tree_backend() {
	echo "$BACKEND_ADDR" >"$LOGDIR/backend.listen"
	cat >"$LOGDIR/backend.sh" <<-SH
		#!/bin/sh
		cd "$PWD" || exit 1
		echo \$\$ >"$LOGDIR/backend.pid"
		exec ./bin/ssemesh-bench backend --listen $BACKEND_ADDR --rate $1 --size $2 </dev/null >>"$LOGDIR/backend.log" 2>&1
	SH
	chmod +x "$LOGDIR/backend.sh"
	tree_start backend
}

# tree_up ROOTS RELAYS LEAVES [MAX_CLIENTS]: add and start the nodes, root
# first, and wait until every leaf sees them all.
tree_up() {
	local roots=$1 relays=$2 leaves=$3 max=${4:-} t name i
	t=$((relays > 0 ? 2 : 1))
	for ((i = 0; i < roots; i++)); do tree_add "root-$i" 0 $((8100 + i)) $((9100 + i)) $((7100 + i)); done
	for ((i = 0; i < relays; i++)); do tree_add "relay-$i" 1 $((8150 + i)) $((9150 + i)) $((7150 + i)); done
	LEAF_NAMES=()
	for ((i = 0; i < leaves; i++)); do
		local m=$max
		[[ -n ${LEAF_MAX[$i]:-} ]] && m=${LEAF_MAX[$i]}
		tree_add "leaf-$i" "$t" $((8200 + i)) $((9200 + i)) $((7200 + i)) "$m"
		LEAF_NAMES+=("leaf-$i")
	done
	for name in "${TREE_NODES[@]}"; do tree_start "$name"; done
	local want=${#TREE_NODES[@]} n=0 _
	for name in "${LEAF_NAMES[@]}"; do
		for _ in $(seq 300); do
			n=$(curl -s "http://$(cat "$LOGDIR/$name.admin")/v1/nodes" 2>/dev/null | grep -c '"state": "alive"' || true)
			((n >= want)) && break
			sleep 0.1
		done
		((n >= want)) || tree_die "$name sees $n of $want nodes alive after 30 s"
	done
}

# tree_wait_parents: open the stream on every leaf for a moment until each
# reports a parent node as its upstream (not the back end); the stream then
# lingers, so the load finds the tree in place.
tree_wait_parents() {
	local deadline=$((SECONDS + 30)) name probes pending
	while :; do
		pending=()
		for name in "${LEAF_NAMES[@]}"; do
			curl -s "http://$(cat "$LOGDIR/$name.admin")/v1/streams" 2>/dev/null | grep -q '"upstream": *"node ' || pending+=("$name")
		done
		((${#pending[@]} == 0)) && return 0
		((SECONDS < deadline)) || tree_die "no parent after 30 s on: ${pending[*]}"
		probes=()
		for name in "${pending[@]}"; do
			curl -sN --max-time 1 -o /dev/null "http://$(cat "$LOGDIR/$name.listen")$STREAM_PATH" &
			probes+=($!)
		done
		wait "${probes[@]}" 2>/dev/null || true
	done
}

# tree_urls: the leaves' stream URLs for --urls, named after the leaves.
tree_urls() {
	local name out=()
	for name in "${LEAF_NAMES[@]}"; do out+=("$name=http://$(cat "$LOGDIR/$name.listen")$STREAM_PATH"); done
	(IFS=,; echo "${out[*]}")
}

# tree_pidfiles: every node's PID file for --node-pids.
tree_pidfiles() {
	local name out=()
	for name in "${TREE_NODES[@]}"; do out+=("$name=$LOGDIR/$name.pid"); done
	(IFS=,; echo "${out[*]}")
}

# tree_seconds DURATION: whole seconds of a duration given as N or Ns (10
# for another form).
tree_seconds() {
	if [[ $1 =~ ^([0-9]+)s?$ ]]; then echo "${BASH_REMATCH[1]}"; else echo 10; fi
}

# tree_load_shape CLIENTS: worker processes (about 4,000 clients each, far
# below the 20,000 open files a process may have) and source addresses
# (about 20,000 clients each, of the ~28,000 ephemeral ports of one) for
# the load generator, in PROCS and SOURCES.
tree_load_shape() {
	PROCS=$((($1 + 3999) / 4000))
	SOURCES=$(seq -s, -f '127.0.0.%g' 2 $((($1 + 19999) / 20000 + 1)))
}

# tree_cleanup: stop everything this run started: the nodes first, then
# the back end, SIGTERM and then SIGKILL after 15 s.
tree_cleanup() {
	local name pid pids=() _
	if [[ -n ${PROFILE_PID:-} ]]; then kill "$PROFILE_PID" 2>/dev/null || true; fi
	for name in "${TREE_NODES[@]}" backend; do
		pid=$(tree_pid "$name")
		[[ -n $pid ]] && kill -TERM "$pid" 2>/dev/null && pids+=("$pid")
	done
	for _ in $(seq 150); do
		local alive=0
		for pid in "${pids[@]}"; do tree_alive "$pid" && alive=1; done
		((alive)) || break
		sleep 0.1
	done
	for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
	wait 2>/dev/null || true
	echo "logs: $LOGDIR" >&2
}

bench_tree_main() {
	set -euo pipefail
	local leaves=${1:-3} clients=${2:-6000} rate=${3:-1} size=${4:-200} duration=${5:-30s}
	[[ $duration =~ ^[0-9]+$ ]] && duration=${duration}s
	local roots=${ROOTS:-1} relays=${RELAYS:-0} max=${MAX_CLIENTS:-19900}
	local storm=${STORM:-} storm_at=${STORM_AT:-10} storm_leaf=${STORM_LEAF:-0} churn=${CHURN:-}
	[[ $leaves =~ ^[1-9][0-9]?$ ]] || tree_die "LEAVES must be 1-99, got $leaves"
	[[ $roots =~ ^[1-9]$ && $relays =~ ^[0-9]$ ]] || tree_die "ROOTS must be 1-9 and RELAYS 0-9"
	[[ $clients =~ ^[1-9][0-9]*$ && $max =~ ^[1-9][0-9]*$ ]] || tree_die "CLIENTS and MAX_CLIENTS must be positive integers"
	local share=$(((clients + leaves - 1) / leaves)) nofile
	nofile=$(ulimit -Hn)
	[[ $nofile == unlimited ]] || ((max + 60 <= nofile)) ||
		tree_die "MAX_CLIENTS $max does not fit a node's open-file limit ($nofile): at most $((nofile - 60))"
	((share <= max)) || tree_die "$clients clients over $leaves leaves is $share per leaf, over MAX_CLIENTS $max: add leaves"

	LEAF_MAX=()
	local storm_flags=() storm_desc=""
	case $storm in
	'') ;;
	kill | restart)
		((leaves >= 2)) || tree_die "STORM=$storm needs at least 2 leaves"
		((clients / (leaves - 1) <= max)) ||
			echo "warning: the $((leaves - 1)) other leaves cannot hold all $clients clients (MAX_CLIENTS $max): expect max_clients refusals" >&2
		;;
	full)
		((leaves >= 2)) || tree_die "STORM=full needs at least 2 leaves"
		local full=$(((share + 3) / 4)) room=$((clients - (leaves - 1) * max + clients / 50))
		((room > full)) && full=$room
		((full <= max)) || tree_die "STORM=full: the other leaves cannot hold the clients a full leaf refuses (MAX_CLIENTS $max): add leaves"
		LEAF_MAX[$storm_leaf]=${FULL_MAX_CLIENTS:-$full}
		churn=${churn:-10%/min}
		;;
	*) tree_die "STORM must be kill, restart or full, got $storm" ;;
	esac
	((storm_leaf < leaves)) || tree_die "STORM_LEAF $storm_leaf: there are $leaves leaves"

	cd "$(dirname "${BASH_SOURCE[0]}")/.."
	tree_build
	LOGDIR=$(mktemp -d "${TMPDIR:-/tmp}/ssemesh-tree.XXXXXX")
	TREE_NODES=()
	tree_config
	trap tree_cleanup EXIT
	trap 'exit 130' INT TERM

	tree_backend "$rate" "$size"
	tree_up "$roots" "$relays" "$leaves" "$max"
	tree_wait_parents
	./bin/ssemesh topology --admin "$(cat "$LOGDIR/leaf-0.admin")" >&2

	# About 500 connects a second, at least over 5 s (at 1,000 a second the
	# load generator's processes and the leaves, on the same two cores,
	# fall behind past 20,000 clients and the last connect inside the
	# window, counting their missed first events as lost), then a settle of
	# 10 s past 20,000 clients for the stragglers; in full mode the settle
	# outlasts a refused client's Retry-After, so that it is in place
	# elsewhere when the window starts. RAMP and SETTLE (seconds) override.
	# After the window, events sent in it still count until the load's
	# drain ends: long enough for clients that a node is draining at the
	# window's end to come back.
	local ramp settle=2 drain=3
	ramp=$((clients / 500 > 5 ? clients / 500 : 5))s
	((clients > 20000)) && settle=10
	[[ $storm == full ]] && settle=$((settle > ${RETRY_AFTER:-5} * 3 / 2 + 3 ? settle : ${RETRY_AFTER:-5} * 3 / 2 + 3))
	[[ -n ${RAMP:-} ]] && ramp=$(tree_seconds "$RAMP")s
	[[ -n ${SETTLE:-} ]] && settle=$(tree_seconds "$SETTLE")
	[[ $storm == restart ]] && drain=$(($(tree_seconds "${DRAIN:-10s}") + 8))
	# A client refused near the window's end waits Retry-After (up to 1.5
	# times it, jittered) before it resumes: the drain outlasts that, or
	# its events would count as lost.
	if [[ -n $storm ]] && ((drain < ${RETRY_AFTER:-5} * 3 / 2 + 3)); then drain=$((${RETRY_AFTER:-5} * 3 / 2 + 3)); fi
	tree_load_shape "$clients"
	if [[ $storm == kill || $storm == restart ]]; then
		cat >"$LOGDIR/storm.sh" <<-SH
			#!/usr/bin/env bash
			LOGDIR=$LOGDIR
			. "$PWD/scripts/bench-tree.sh"
			tree_$storm leaf-$storm_leaf
		SH
		chmod +x "$LOGDIR/storm.sh"
		storm_flags=(--storm-at "${storm_at}s" --storm-cmd "$LOGDIR/storm.sh")
		storm_desc=", storm: $storm leaf-$storm_leaf at +${storm_at}s"
	fi
	[[ -n $churn ]] && storm_flags+=(--churn "$churn")
	if [[ -n ${PROFILE:-} ]]; then
		[[ -s $LOGDIR/$PROFILE.admin ]] || tree_die "PROFILE=$PROFILE: no such node"
		tree_profile "$PROFILE" $(($(tree_seconds "$ramp") + settle + ${PROFILE_AT:-10})) "${PROFILE_SECONDS:-20}" &
		PROFILE_PID=$!
	fi
	echo "load: $clients clients over $leaves leaves (${share} each${LEAF_MAX[$storm_leaf]:+, leaf-$storm_leaf admits ${LEAF_MAX[$storm_leaf]}}), $PROCS processes, sources $SOURCES, ramp $ramp, window $duration${storm_desc}${churn:+, churn $churn}; back end $rate ev/s of $size bytes" >&2
	# shellcheck disable=SC2086 # BENCH_FLAGS is a list of flags
	./bin/ssemesh-bench load --urls "$(tree_urls)" --clients "$clients" --procs "$PROCS" --sources "$SOURCES" \
		--ramp "$ramp" --settle "${settle}s" --duration "$duration" --drain "${drain}s" --retry "${RETRY:-500ms}" \
		--node-pids "$(tree_pidfiles)" --backend-stats "http://$BACKEND_ADDR/_backend/connections" \
		--json-file "$LOGDIR/report.json" ${storm_flags[@]+"${storm_flags[@]}"} ${BENCH_FLAGS:-} 2>>"$LOGDIR/load.log"
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
	bench_tree_main "$@"
fi
