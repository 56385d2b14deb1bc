#!/usr/bin/env bash
# Load-test one ssemesh node on this machine.
#
#   scripts/bench.sh [CLIENTS] [RATE] [SIZE] [DURATION]
#
# With DEPTH=N (default 1) the clients are on the leaf of a chain of N nodes
# joined by gossip on loopback: a root (tier 0) next to the back end, N-2
# relays, and the leaf, each taking the stream from the one before it. This
# measures what each hop adds; the back end still serves one connection.
#
# With TLS=1 the clients reach the node over HTTPS with HTTP/1.1, one TLS
# connection each; with TLS=h2 over HTTPS with HTTP/2, as streams, 100 per
# connection (BENCH_FLAGS="--h2-streams N" changes that). The script makes a
# throwaway CA and a certificate for IP 127.0.0.1 (EC P-256) with openssl in
# the log directory, checks them with openssl verify, adds
#   tls: {cert: LOGDIR/node.crt, key: LOGDIR/node.key}
# to the node's configuration file and gives the load generator --ca and
# --proto. With DEPTH > 1 only the leaf, where the clients are, has TLS. The
# report then also shows the TCP connections used; in every mode it shows
# the node's CPU per 1,000 connects during the ramp (with TLS: handshakes).
#
#   CLIENTS   SSE clients on the node (default 1000)
#   RATE      events per second from the back end (default 1)
#   SIZE      event payload in bytes (default 200)
#   DURATION  measurement window, e.g. 60 or 60s (default 30s)
#
# Builds ./bin/ssemesh and ./bin/ssemesh-bench, starts the synthetic back end
# and one node in front of it, runs the load generator against the node and
# prints its report; everything it started is stopped on exit. Extra flags for
# the load generator can be given in BENCH_FLAGS (e.g. BENCH_FLAGS=--json).
# All traffic stays on 127.0.0.0/8.
set -euo pipefail

CLIENTS=${1:-1000}
RATE=${2:-1}
SIZE=${3:-200}
DURATION=${4:-30s}
[[ $DURATION =~ ^[0-9]+$ ]] && DURATION=${DURATION}s

BACKEND_ADDR=127.0.0.1:7000
NODE_ADDR=127.0.0.1:8080
STREAM_PATH=/bench
DEPTH=${DEPTH:-1}
[[ $DEPTH =~ ^[1-9][0-9]?$ ]] || { echo "DEPTH must be 1-99, got $DEPTH" >&2; exit 2; }
TLS=${TLS:-}
case $TLS in
'') SCHEME=http PROTO= ;;
1) SCHEME=https PROTO=http1 ;;
h2) SCHEME=https PROTO=h2 ;;
*) echo "TLS must be 1 (HTTPS, HTTP/1.1) or h2 (HTTPS, HTTP/2), got $TLS" >&2; exit 2 ;;
esac
if [[ -n $TLS ]] && ! command -v openssl >/dev/null; then
	echo "TLS=$TLS needs openssl to make the node's certificate" >&2
	exit 2
fi
LOGDIR=$(mktemp -d "${TMPDIR:-/tmp}/ssemesh-bench.XXXXXX")
cat >"$LOGDIR/bench.yaml" <<YAML
limits:
  per_ip: {connections: 0}
mesh:
  secret: $(head -c 32 /dev/urandom | base64)
YAML
NODE_CONFIG=$LOGDIR/bench.yaml
LOAD_FLAGS=()
if [[ -n $TLS ]]; then
	# A CA of this run only, and the node's certificate from it, valid for
	# the address the clients use. The openssl configuration is written
	# here, so that the system's cannot add or duplicate extensions. Each
	# step logs to tls.log.
	(
		cd "$LOGDIR"
		cat >ca.cnf <<-'CNF'
			[req]
			prompt = no
			distinguished_name = dn
			x509_extensions = ca
			[dn]
			CN = ssemesh-bench throwaway CA
			[ca]
			basicConstraints = critical,CA:TRUE
			keyUsage = critical,keyCertSign,cRLSign
			subjectKeyIdentifier = hash
		CNF
		openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ca.key
		openssl req -x509 -new -config ca.cnf -key ca.key -sha256 -days 2 -out ca.crt
		openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out node.key
		openssl req -new -config ca.cnf -key node.key -subj /CN=127.0.0.1 -out node.csr
		printf '%s\n' basicConstraints=critical,CA:FALSE keyUsage=critical,digitalSignature \
			extendedKeyUsage=serverAuth subjectAltName=IP:127.0.0.1 authorityKeyIdentifier=keyid >node.ext
		openssl x509 -req -in node.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -sha256 \
			-extfile node.ext -out node.crt
		openssl verify -CAfile ca.crt -verify_ip 127.0.0.1 -purpose sslserver node.crt
	) >"$LOGDIR/tls.log" 2>&1 || { echo "making the node's certificate failed:" >&2; cat "$LOGDIR/tls.log" >&2; exit 1; }
	# Only the node the clients reach gets the listener in TLS: the
	# upstream hops keep bench.yaml.
	NODE_CONFIG=$LOGDIR/node.yaml
	cat "$LOGDIR/bench.yaml" - >"$NODE_CONFIG" <<YAML
tls: {cert: $LOGDIR/node.crt, key: $LOGDIR/node.key}
YAML
	LOAD_FLAGS=(--ca "$LOGDIR/ca.crt" --proto "$PROTO")
fi

# The node under test; kept in one place because its flags may still change.
# Its configuration file (written above) lifts the per-address connection
# limit, since the load generator is thousands of clients on a few
# addresses, gives a chain its mesh secret and, with TLS, the certificate.
NODE_CMD=(./bin/ssemesh run --config "$NODE_CONFIG" --listen "$NODE_ADDR" --admin 127.0.0.1:9080 --backend "bench=http://$BACKEND_ADDR$STREAM_PATH" --max-clients $((CLIENTS * 2 + 1000)))
if ((DEPTH > 1)); then
	# The leaf is the last node of the chain: tier DEPTH-1, seeded with the
	# root's gossip address.
	NODE_CMD+=(--node-id leaf --tier $((DEPTH - 1)) --gossip 127.0.0.1:7946 --seed 127.0.0.1:7947)
fi

# About 4,000 clients per worker process (each process may open at most
# 20,000 files) and 20,000 per source address (~28,000 ephemeral ports each).
PROCS=$(( (CLIENTS + 3999) / 4000 ))
NSOURCES=$(( (CLIENTS + 19999) / 20000 ))
SOURCES=$(seq -s, -f '127.0.0.%g' 2 $((NSOURCES + 1)))
# Connect about 1,000 clients per second, at least over 5 seconds.
RAMP=$(( CLIENTS / 1000 > 5 ? CLIENTS / 1000 : 5 ))s

cd "$(dirname "$0")/.."
export GOTOOLCHAIN=local
mkdir -p bin
echo "building ./bin/ssemesh and ./bin/ssemesh-bench" >&2
go build -o bin/ssemesh ./cmd/ssemesh
go build -o bin/ssemesh-bench ./cmd/ssemesh-bench

PIDS=()
cleanup() {
	local pid
	for pid in "${PIDS[@]}"; do
		kill -INT "$pid" 2>/dev/null || true
	done
	for pid in "${PIDS[@]}"; do
		# Give each process 10 s to drain, then stop it for good.
		for _ in $(seq 100); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	echo "logs: $LOGDIR" >&2
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# wait_port HOST:PORT NAME PID: wait up to 30 s for a listener.
wait_port() {
	local host=${1%:*} port=${1##*:}
	for _ in $(seq 300); do
		if ! kill -0 "$3" 2>/dev/null; then
			echo "$2 exited; its log:" >&2
			cat "$LOGDIR/$2.log" >&2
			exit 1
		fi
		if (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then
			return 0
		fi
		sleep 0.1
	done
	echo "$2 is not listening on $1 after 30 s" >&2
	exit 1
}

./bin/ssemesh-bench backend --listen "$BACKEND_ADDR" --rate "$RATE" --size "$SIZE" >"$LOGDIR/backend.log" 2>&1 &
PIDS+=($!)
wait_port "$BACKEND_ADDR" backend "$!"

# Upstream part of the chain: tier t listens on 8081+t, admin 9081+t,
# gossip 7947+t.
for ((t = 0; t < DEPTH - 1; t++)); do
	addr=127.0.0.1:$((8081 + t))
	./bin/ssemesh run --config "$LOGDIR/bench.yaml" --node-id "hop-$t" --tier "$t" --listen "$addr" --admin "127.0.0.1:$((9081 + t))" \
		--gossip "127.0.0.1:$((7947 + t))" --seed 127.0.0.1:7947 \
		--backend "bench=http://$BACKEND_ADDR$STREAM_PATH" >"$LOGDIR/hop-$t.log" 2>&1 &
	PIDS+=($!)
	wait_port "$addr" "hop-$t" "$!"
done

"${NODE_CMD[@]}" >"$LOGDIR/node.log" 2>&1 &
NODE_PID=$!
PIDS+=("$NODE_PID")
wait_port "$NODE_ADDR" node "$NODE_PID"

if ((DEPTH > 1)); then
	# Wait until the leaf's admin API sees the whole chain.
	for _ in $(seq 300); do
		n=$(curl -s http://127.0.0.1:9080/v1/nodes 2>/dev/null | grep -o '"id"' | wc -l || true)
		((n >= DEPTH)) && break
		sleep 0.1
	done
	((n >= DEPTH)) || { echo "the leaf sees $n of $DEPTH nodes after 30 s" >&2; exit 1; }
fi

echo "load: $CLIENTS clients${TLS:+ over HTTPS (${PROTO})}, $PROCS processes, sources $SOURCES, ramp $RAMP, window $DURATION; back end $RATE ev/s of $SIZE bytes" >&2
# shellcheck disable=SC2086 # BENCH_FLAGS is a list of flags
./bin/ssemesh-bench load --url "$SCHEME://$NODE_ADDR$STREAM_PATH" --clients "$CLIENTS" --procs "$PROCS" \
	--sources "$SOURCES" --ramp "$RAMP" --duration "$DURATION" --node-pid "$NODE_PID" ${LOAD_FLAGS[@]+"${LOAD_FLAGS[@]}"} ${BENCH_FLAGS:-} 2>>"$LOGDIR/load.log"
if ((DEPTH > 1)); then
	# The chain as the mesh reports it; the stream lingers after the load.
	curl -s "http://127.0.0.1:9080/v1/topology?format=text" >&2 || true
fi
