#!/usr/bin/env bash
# Builds the ssemesh Debian package from a release binary made by
# scripts/release.sh, with nfpm pinned in this directory's go.mod (a module
# of its own, so nfpm's dependencies stay out of ssemesh's go.mod).
#
#   deploy/package/build.sh [--arch amd64|arm64] [--version VERSION] [--dist DIR] [--out DIR]
#   deploy/package/build.sh --deb-version VERSION   print the Debian version only
#
#   --arch     Debian architecture (default: this machine's)
#   --dist     where release.sh put the binaries (default: dist)
#   --version  the release version (default: what the binary for this
#              machine in --dist reports; required to package another
#              architecture when that binary is absent)
#   --out      where the .deb goes (default: --dist)
#
# The package is dist/ssemesh_<debian version>_<arch>.deb; its path is the
# last line on stdout, logs go to stderr. The same binary and commit give
# the same .deb (file times come from SOURCE_DATE_EPOCH, by default the
# commit time).
#
# Environment:
#   SSEMESH_DEB_MAINTAINER  the package's Maintainer field
set -euo pipefail

log() { printf 'package build: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "${here}/../.." && pwd)"

# deb_version maps a release version to a Debian version that sorts the same
# way:
#   v1.2.0                              1.2.0
#   v1.2.0-rc.1                         1.2.0~rc.1         (before 1.2.0)
#   v1.2.0-3-gabc1234 (git describe)    1.2.0+3.gabc1234   (after 1.2.0)
#   v0.0.0-20261207001952-ea96d0f514b0  0.0.0~20261207001952.ea96d0f514b0
#   ...-dirty                           ...+dirty (or .dirty after a +)
# Go pseudo-versions and semver pre-releases come before their version, as
# "~" does in Debian; commits after a tag come after it, as "+" does.
deb_version() {
	local v="${1#v}" meta="" dirty=0 core pre out
	if [[ "${v}" == *-dirty ]]; then
		dirty=1
		v="${v%-dirty}"
	fi
	if [[ "${v}" =~ ^(.+)-([0-9]+)-g([0-9a-f]+)$ ]]; then
		v="${BASH_REMATCH[1]}"
		meta="+${BASH_REMATCH[2]}.g${BASH_REMATCH[3]}"
	fi
	if [[ "${v}" == *+* ]]; then
		# Semver build metadata comes before what git describe added.
		meta="+${v#*+}${meta:+.${meta#+}}"
		v="${v%%+*}"
	fi
	core="${v%%-*}"
	pre=""
	[[ "${v}" == *-* ]] && pre="${v#*-}"
	out="${core}"
	[[ -n "${pre}" ]] && out+="~${pre//-/.}"
	out+="${meta}"
	if [[ "${dirty}" == 1 ]]; then
		if [[ -n "${meta}" ]]; then out+=".dirty"; else out+="+dirty"; fi
	fi
	if ! [[ "${out}" =~ ^[0-9][A-Za-z0-9.+~]*$ ]]; then
		log "cannot map version ${1} to a Debian version (got ${out})"
		return 1
	fi
	printf '%s\n' "${out}"
}

arch=""
version=""
dist="${repo}/dist"
out=""
while [[ $# -gt 0 ]]; do
	case "$1" in
		--arch) arch="$2"; shift 2 ;;
		--version) version="$2"; shift 2 ;;
		--dist) dist="$2"; shift 2 ;;
		--out) out="$2"; shift 2 ;;
		--deb-version) deb_version "$2"; exit ;;
		*) echo "usage: $0 [--arch amd64|arm64] [--version V] [--dist DIR] [--out DIR] | --deb-version V" >&2; exit 2 ;;
	esac
done

command -v go >/dev/null 2>&1 || die "go is not on PATH"
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"

host_arch="$(go env GOHOSTARCH)"
[[ -n "${arch}" ]] || arch="$(dpkg --print-architecture 2>/dev/null || echo "${host_arch}")"
case "${arch}" in
	amd64|arm64) ;;
	*) die "unsupported architecture ${arch} (amd64 or arm64)" ;;
esac
dist="$(cd "${dist}" 2>/dev/null && pwd)" || die "no ${dist}: run scripts/release.sh first"
out="${out:-${dist}}"
mkdir -p "${out}"
out="$(cd "${out}" && pwd)"

binary="${dist}/ssemesh_linux_${arch}"
[[ -f "${binary}" ]] || die "no ${binary}: run scripts/release.sh first"
if [[ -f "${dist}/SHA256SUMS" ]]; then
	(cd "${dist}" && grep " ssemesh_linux_${arch}\$" SHA256SUMS | sha256sum --check --quiet -) >&2 \
		|| die "${binary} does not match ${dist}/SHA256SUMS"
fi

if [[ -z "${version}" ]]; then
	# The binaries in one dist directory come from one release build, so the
	# one that runs here names the version of all.
	runnable="${dist}/ssemesh_linux_${host_arch}"
	[[ -x "${runnable}" ]] || die "cannot tell the version: no ${runnable} to ask; pass --version"
	version="$("${runnable}" version | awk '{print $2}')"
	[[ -n "${version}" ]] || die "${runnable} version printed no version"
fi
debver="$(deb_version "${version}")"

export SSEMESH_DEB_VERSION="${debver}"
export SSEMESH_DEB_ARCH="${arch}"
export SSEMESH_BINARY="${binary}"
export SSEMESH_DEB_MAINTAINER="${SSEMESH_DEB_MAINTAINER:-ssemesh maintainers <maintainers@ssemesh.invalid>}"
if [[ -z "${SOURCE_DATE_EPOCH:-}" ]]; then
	SOURCE_DATE_EPOCH="$(git -C "${repo}" log -1 --format=%ct 2>/dev/null || date +%s)"
fi
export SOURCE_DATE_EPOCH

tmp="$(mktemp -d)"
trap 'rm -rf "${tmp}"' EXIT
log "building nfpm $(awk '$1 == "require" && $2 == "github.com/goreleaser/nfpm/v2" {print $3}' "${here}/go.mod") (about a minute with a cold module cache)"
(
	cd "${here}"
	CGO_ENABLED=0 go build -o "${tmp}/nfpm" github.com/goreleaser/nfpm/v2/cmd/nfpm
)

deb="${out}/ssemesh_${debver}_${arch}.deb"
log "packaging ${version} as ${debver} for ${arch}"
# nfpm reads the sources named in nfpm.yaml relative to the repository root.
(cd "${repo}" && "${tmp}/nfpm" package --config deploy/package/nfpm.yaml \
	--packager deb --target "${deb}") >&2
[[ -s "${deb}" ]] || die "nfpm wrote no ${deb}"
printf '%s\n' "${deb}"
