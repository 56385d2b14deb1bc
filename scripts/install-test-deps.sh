#!/usr/bin/env bash
# Installs everything ssemesh's test suite needs on a fresh Debian 12 machine
# (run as root, with access to the Go module proxy, Debian apt and npm):
#   1. the Consul agent, built by deploy/consul/build.sh into the user cache;
#   2. the npm packages of test/eventsource/, when that folder has a package.json;
#   3. Debian's chromium, for real-browser EventSource tests
#      (skip with SSEMESH_SKIP_CHROMIUM=1).
# Idempotent: steps whose result is already present finish in about a second.
# It prints what it did and how long each step took; it exports nothing.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"

log() { printf 'install-test-deps: %s\n' "$*" >&2; }

declare -a summary=()
result_file="$(mktemp)"
trap 'rm -f "${result_file}"' EXIT
trap 'log "FAILED (line ${LINENO})"' ERR
# step NAME FUNCTION: runs FUNCTION, timing it; the function prints one line
# on stdout describing what it did, which ends up in the summary. FUNCTION
# runs in this shell, not in an `if` or $(...), so that set -e still ends the
# script at the first failing command inside it.
step() {
	local name="$1" fn="$2" start end result
	start=$(date +%s.%N)
	log "${name}: starting"
	"${fn}" >"${result_file}"
	result="$(cat "${result_file}")"
	end=$(date +%s.%N)
	local took
	took=$(awk -v s="${start}" -v e="${end}" 'BEGIN { printf "%.1f", e - s }')
	log "${name}: ${result} (${took}s)"
	summary+=("$(printf '%-12s %6ss  %s' "${name}" "${took}" "${result}")")
}

install_consul() {
	local bin
	# build.sh logs to stderr and prints the binary's path as its last line.
	bin="$("${repo}/deploy/consul/build.sh" | tail -n1)"
	[[ -x "${bin}" ]] || { log "build.sh did not produce a binary"; return 1; }
	echo "consul $("${bin}" version | head -n1 | awk '{print $2}') at ${bin}"
}

install_eventsource() {
	local dir="${repo}/test/eventsource"
	if [[ ! -f "${dir}/package.json" ]]; then
		echo "skipped: ${dir#"${repo}/"}/package.json not present"
		return 0
	fi
	if ! command -v npm >/dev/null 2>&1; then
		command -v apt-get >/dev/null 2>&1 || { log "npm missing and no apt-get"; return 1; }
		log "npm missing: installing Debian nodejs and npm"
		apt_install nodejs npm >&2
	fi
	# npm ci wipes and reinstalls node_modules every time; skip it when the
	# installed tree already matches the lock file (npm writes
	# node_modules/.package-lock.json after each install).
	if [[ -f "${dir}/package-lock.json" ]]; then
		if [[ -f "${dir}/node_modules/.package-lock.json" && "${dir}/node_modules/.package-lock.json" -nt "${dir}/package-lock.json" ]]; then
			echo "npm packages already installed in ${dir#"${repo}/"}"
			return 0
		fi
		(cd "${dir}" && npm ci --no-audit --no-fund >&2)
		echo "npm ci in ${dir#"${repo}/"}"
	else
		(cd "${dir}" && npm install --no-audit --no-fund >&2)
		echo "npm install in ${dir#"${repo}/"} (no package-lock.json: commit the one npm wrote)"
	fi
}

apt_updated=0
apt_install() {
	export DEBIAN_FRONTEND=noninteractive
	if [[ "${apt_updated}" == 0 ]]; then
		apt-get update -qq
		apt_updated=1
	fi
	apt-get install -y -qq --no-install-recommends "$@"
}

install_chromium() {
	if [[ "${SSEMESH_SKIP_CHROMIUM:-0}" == "1" ]]; then
		echo "skipped: SSEMESH_SKIP_CHROMIUM=1"
		return 0
	fi
	if command -v chromium >/dev/null 2>&1; then
		echo "$(chromium --version 2>/dev/null | head -n1 || echo chromium) already installed"
		return 0
	fi
	command -v apt-get >/dev/null 2>&1 || { log "chromium missing and no apt-get to install it"; return 1; }
	apt_install chromium >&2
	echo "installed $(chromium --version 2>/dev/null | head -n1)"
}

# The network-namespace drill (make test-netns) needs ip and ss (iproute2)
# and iptables; only root can use them, so elsewhere there is nothing to do.
install_netns_tools() {
	if ((EUID != 0)); then
		echo "skipped: not root (the network-namespace drill needs root)"
		return 0
	fi
	local missing=()
	command -v ip >/dev/null 2>&1 && command -v ss >/dev/null 2>&1 || missing+=(iproute2)
	command -v iptables >/dev/null 2>&1 || command -v iptables-legacy >/dev/null 2>&1 || missing+=(iptables)
	if ((${#missing[@]} == 0)); then
		echo "ip, ss and iptables already installed"
		return 0
	fi
	command -v apt-get >/dev/null 2>&1 || { log "${missing[*]} missing and no apt-get to install them"; return 1; }
	apt_install "${missing[@]}" >&2
	echo "installed ${missing[*]}"
}

total_start=$(date +%s)
step consul install_consul
step netns install_netns_tools
step eventsource install_eventsource
step chromium install_chromium

printf 'test dependencies ready in %ss:\n' "$(( $(date +%s) - total_start ))"
printf '  %s\n' "${summary[@]}"
