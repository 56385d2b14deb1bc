#!/usr/bin/env bash
# Builds the Consul agent used by ssemesh's tests and demos from the Go module
# proxy and caches it outside the repository, keyed by version.
#
# Consul's go.mod has replace directives, so it cannot be installed with
# `go install ...@version`; this directory is a separate module that requires
# Consul, and dependencies' replace directives are ignored.
#
# Idempotent: when the cached binary exists and runs, nothing is built.
# Logs go to stderr; the last line on stdout is the binary's path.
#
# Environment:
#   SSEMESH_CACHE   cache root (default: ${XDG_CACHE_HOME:-$HOME/.cache}/ssemesh)
#   SSEMESH_CONSUL_REBUILD=1  build even when a working binary is cached
set -euo pipefail

readonly CONSUL_VERSION="v1.14.11"

log() { printf 'consul build: %s\n' "$*" >&2; }

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache_root="${SSEMESH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ssemesh}"
dest_dir="${cache_root}/consul-${CONSUL_VERSION}"
dest="${dest_dir}/consul"

# The pinned version lives in go.mod too; refuse to build something the cache
# path would mislabel.
if ! grep -Eq "^require github.com/hashicorp/consul ${CONSUL_VERSION}\$" "${here}/go.mod"; then
	log "go.mod does not require github.com/hashicorp/consul ${CONSUL_VERSION}; update build.sh and go.mod together"
	exit 1
fi

if [[ "${SSEMESH_CONSUL_REBUILD:-0}" != "1" && -x "${dest}" ]]; then
	if out="$("${dest}" version 2>&1)"; then
		log "cached: ${dest} ($(head -n1 <<<"${out}"))"
		printf '%s\n' "${dest}"
		exit 0
	fi
	log "cached binary ${dest} does not run; rebuilding"
fi

command -v go >/dev/null 2>&1 || { log "go is not on PATH"; exit 1; }

mkdir -p "${dest_dir}"
# The temporary file sits next to the destination so the final mv is a rename
# on one file system, which is atomic: a concurrent reader sees either no
# binary or a complete one.
tmp="$(mktemp "${dest_dir}/.consul.XXXXXX")"
trap 'rm -f "${tmp}"' EXIT

export GOTOOLCHAIN=local
# -mod=mod lets the build fill a missing go.sum line from the proxy instead of
# failing; go.sum is kept complete, so normally nothing is fetched but modules.
export GOFLAGS="${GOFLAGS:+${GOFLAGS} }-mod=mod"
export CGO_ENABLED="${CGO_ENABLED:-0}"

log "building github.com/hashicorp/consul ${CONSUL_VERSION} with $(go version) (several minutes with a cold module cache)"
start=$(date +%s)
(
	cd "${here}"
	go build -trimpath -ldflags "-s -w" \
		-o "${tmp}" github.com/hashicorp/consul
)
chmod 0755 "${tmp}"
if ! out="$("${tmp}" version 2>&1)"; then
	log "built binary does not run: ${out}"
	exit 1
fi
mv -f "${tmp}" "${dest}"
trap - EXIT
log "built ${dest} in $(( $(date +%s) - start ))s ($(head -n1 <<<"${out}"))"
printf '%s\n' "${dest}"
