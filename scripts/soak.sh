#!/usr/bin/env bash
# Soak a small tree of ssemesh nodes for a long time, looking for leaks and
# for loss under routine churn. A benchmark, not a CI test.
#
#   scripts/soak.sh [DURATION]        # e.g. 1h, 24h, 180s (default 1h)
#
# The tree is the bench back end, one root (tier 0), one relay (tier 1) and
# two leaves (tier 2), joined by gossip on loopback (as scripts/bench-tree.sh
# starts them). The clients are spread over the two leaves; CHURN of them
# reconnect of their own accord with Last-Event-ID (to either leaf), and
# every RESTART_EVERY seconds one node of RESTART_TARGETS, in turn, is
# restarted gracefully (SIGTERM: it drains, then starts again): a relay's
# children move to another parent, a leaf's clients to the other leaf.
#
# Events sent in the window count until the load's drain, DRAIN + 10 s
# after it, so that clients a node is draining at the window's end come
# back in time.
#
# Every SAMPLE_EVERY seconds each node's RSS (from /proc), goroutines
# (go_goroutines), open files (process_open_fds) and clients
# (ssemesh_clients_connected) from its /metrics go to LOGDIR/soak.csv. At
# the end the script prints the load generator's report (loss and
# duplicates per client across every reconnect, per leaf and in total; the
# back end's connections, which stay at 1) and a summary per node and
# series: first, last and largest value, and the slope per hour over the
# node's last process.
#
# Environment (defaults in brackets):
#   CLIENTS [10000]  RATE [1] events/s  SIZE [200] bytes
#   CHURN [5%/min]   RESTART_EVERY [600] s  RESTART_TARGETS ["relay-0 leaf-0 leaf-1"]
#   SAMPLE_EVERY [10] s  DRAIN [10s]  BENCH_FLAGS (more flags for the load)
#
# A short check of the script itself:
#   CLIENTS=2000 RESTART_EVERY=60 scripts/soak.sh 180s
set -euo pipefail

# shellcheck source=bench-tree.sh
. "$(dirname "${BASH_SOURCE[0]}")/bench-tree.sh"

DURATION=${1:-1h}
[[ $DURATION =~ ^[0-9]+$ ]] && DURATION=${DURATION}s
CLIENTS=${CLIENTS:-10000}
RATE=${RATE:-1}
SIZE=${SIZE:-200}
CHURN=${CHURN:-5%/min}
RESTART_EVERY=${RESTART_EVERY:-600}
SAMPLE_EVERY=${SAMPLE_EVERY:-10}
read -r -a TARGETS <<<"${RESTART_TARGETS:-relay-0 leaf-0 leaf-1}"
[[ $RESTART_EVERY =~ ^[0-9]+$ && $SAMPLE_EVERY =~ ^[1-9][0-9]*$ ]] || tree_die "RESTART_EVERY and SAMPLE_EVERY are whole seconds"
((CLIENTS / 2 + 60 <= 19900)) || tree_die "CLIENTS $CLIENTS: a leaf must hold them all while the other restarts (at most 19,840)"

# soak_sample CSV: append a row per node every SAMPLE_EVERY seconds.
soak_sample() {
	local start=${EPOCHREALTIME/./} next=${EPOCHREALTIME%.*} now e name pid rss metrics
	while :; do
		now=${EPOCHREALTIME/./}
		e=$((now - start))
		for name in "${TREE_NODES[@]}"; do
			pid=$(tree_pid "$name")
			rss=$(awk '/^VmRSS:/{print $2}' "/proc/$pid/status" 2>/dev/null || true)
			metrics=$(curl -s --max-time 2 "http://$(cat "$LOGDIR/$name.admin")/metrics" 2>/dev/null || true)
			awk -v pre="$((now / 1000000)),$((e / 1000000)).$((e / 100000 % 10)),$name,$pid,$rss" '
				$1 == "go_goroutines" { g = sprintf("%d", $2) }
				$1 == "process_open_fds" { f = sprintf("%d", $2) }
				$1 == "ssemesh_clients_connected" { c = sprintf("%d", $2) }
				END { print pre "," g "," f "," c }
			' <<<"$metrics" >>"$1"
		done
		next=$((next + SAMPLE_EVERY))
		while ((${EPOCHREALTIME%.*} < next)); do sleep 0.2; done
	done
}

# soak_restarts: restart the targets in turn, every RESTART_EVERY seconds.
soak_restarts() {
	local i=0 next=$((SECONDS + RESTART_EVERY)) target
	while :; do
		while ((SECONDS < next)); do sleep 0.2; done
		target=${TARGETS[i % ${#TARGETS[@]}]}
		i=$((i + 1))
		# In this shell, not a pipeline's: stopping the loop stops the
		# restart with it.
		tree_restart "$target" 2>>"$LOGDIR/restarts.log"
		next=$((next + RESTART_EVERY))
	done
}

# soak_summary CSV REPORT: first, last and largest value and the slope per
# hour of every series, per node; then loss from the load's JSON report.
soak_summary() {
	echo "soak summary ($(($(wc -l <"$1") - 1)) samples in $1)"
	awk -F, '
		NR == 1 { next }
		{
			n = $3
			if (!(n in seen)) { seen[n] = 1; order[++nodes] = n }
			if ($4 != "" && $4 != lastpid[n]) { if (lastpid[n] != "") restarts[n]++; lastpid[n] = $4; cnt[n] = 0 }
			for (s = 5; s <= 7; s++) {
				if ($s == "") continue
				k = n SUBSEP s
				if (!(k in first)) first[k] = $s
				last[k] = $s
				if (!(k in mx) || $s + 0 > mx[k]) mx[k] = $s + 0
				# least squares over the current process only
				if (cnt[n] == 0) { sx[k] = sy[k] = sxx[k] = sxy[k] = m[k] = 0 }
				sx[k] += $2; sy[k] += $s; sxx[k] += $2 * $2; sxy[k] += $2 * $s; m[k]++
			}
			cnt[n]++
		}
		END {
			split("rss_kb goroutines open_fds", name, " ")
			printf "  %-10s %-10s %12s %12s %12s %14s %8s\n", "NODE", "SERIES", "FIRST", "LAST", "MAX", "SLOPE/HOUR", "RESTARTS"
			for (i = 1; i <= nodes; i++) {
				n = order[i]
				for (s = 5; s <= 7; s++) {
					k = n SUBSEP s
					if (!(k in first)) continue
					slope = "-"
					d = m[k] * sxx[k] - sx[k] * sx[k]
					if (m[k] >= 3 && d > 0) slope = sprintf("%+.1f", 3600 * (m[k] * sxy[k] - sx[k] * sy[k]) / d)
					printf "  %-10s %-10s %12s %12s %12s %14s %8d\n", n, name[s - 4], first[k], last[k], mx[k], slope, restarts[n]
				}
			}
			print "  (slope: least squares over the samples of the node'"'"'s last process)"
		}' "$1"
	if [[ -s $2 ]]; then
		# The load report: top-level fields are indented by two spaces.
		awk '/^  "(clients|connected|expected|delivered|lost|duplicated|reconnects)": / {
				gsub(/[",]/, ""); printf "%s%s %s", sep, $1, $2; sep = "  " }
			END { print "" }' "$2" | sed 's/^/  load: /'
	fi
}

soak_stop_loops() {
	local pid
	for pid in "${LOOPS[@]}"; do kill "$pid" 2>/dev/null || true; done
	for pid in "${LOOPS[@]}"; do wait "$pid" 2>/dev/null || true; done
	# A restart cut short may have started a node a moment ago: let its
	# launcher write its PID file before the cleanup reads them.
	sleep 0.3
}

soak_exit() {
	soak_stop_loops
	[[ -s $LOGDIR/soak.csv ]] && soak_summary "$LOGDIR/soak.csv" "$LOGDIR/report.json"
	tree_cleanup
}

cd "$(dirname "${BASH_SOURCE[0]}")/.."
tree_build
LOGDIR=$(mktemp -d "${TMPDIR:-/tmp}/ssemesh-soak.XXXXXX")
TREE_NODES=()
LEAF_MAX=()
LOOPS=()
tree_config
trap soak_exit EXIT
trap 'exit 130' INT TERM

tree_backend "$RATE" "$SIZE"
tree_up 1 1 2
tree_wait_parents
./bin/ssemesh topology --admin "$(cat "$LOGDIR/leaf-0.admin")" >&2

echo "time,elapsed_s,node,pid,rss_kb,goroutines,open_fds,clients" >"$LOGDIR/soak.csv"
soak_sample "$LOGDIR/soak.csv" &
LOOPS+=($!)
if ((RESTART_EVERY > 0)); then
	soak_restarts &
	LOOPS+=($!)
fi

tree_load_shape "$CLIENTS"
RAMP=$((CLIENTS / 1000 > 5 ? CLIENTS / 1000 : 5))s
echo "soak: $CLIENTS clients over 2 leaves for $DURATION, churn $CHURN, a graceful restart of one of (${TARGETS[*]}) every ${RESTART_EVERY}s, samples every ${SAMPLE_EVERY}s to $LOGDIR/soak.csv" >&2
# shellcheck disable=SC2086 # BENCH_FLAGS is a list of flags
./bin/ssemesh-bench load --urls "$(tree_urls)" --clients "$CLIENTS" --procs "$PROCS" --sources "$SOURCES" \
	--ramp "$RAMP" --settle 2s --duration "$DURATION" --drain "$(($(tree_seconds "${DRAIN:-10s}") + 10))s" \
	--churn "$CHURN" --max-reconnects 1000000 \
	--node-pids "$(tree_pidfiles)" --backend-stats "http://$BACKEND_ADDR/_backend/connections" \
	--json-file "$LOGDIR/report.json" ${BENCH_FLAGS:-} 2>>"$LOGDIR/load.log"
