#!/usr/bin/env bash
# Builds the release binaries: static (CGO_ENABLED=0), reproducible
# (-trimpath, no build id, the commit time as the build date) ssemesh for
# linux/amd64 and linux/arm64, with SHA256SUMS. Two builds of one commit
# give the same bytes: `scripts/release.sh && scripts/release.sh --verify`.
#
#   scripts/release.sh [--out dist] [--verify]
#
# The version is the tag on HEAD (v1.2.0), else `git describe` (v1.2.0-3-gabc1234),
# else, with no tag yet, a Go pseudo-version (v0.0.0-20261207001952-ea96d0f514b0)
# as `go build` would stamp; "-dirty" marks a tree with uncommitted changes.
set -euo pipefail
cd "$(dirname "$0")/.."

out=dist
verify=0
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --verify) verify=1; shift ;;
    *) echo "usage: $0 [--out DIR] [--verify]" >&2; exit 2 ;;
  esac
done

GO="${GO:-go}"
commit="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
if ! version="$(git describe --tags --dirty 2>/dev/null)"; then
  version="v0.0.0-$(TZ=UTC git log -1 --date=format-local:%Y%m%d%H%M%S --format=%cd 2>/dev/null || echo 0)-${commit:0:12}"
  git diff --quiet HEAD 2>/dev/null || version="${version}-dirty"
fi
# The commit time, not the clock: the same commit builds the same bytes.
date="$(git log -1 --format=%cI 2>/dev/null || date -u +%Y-%m-%dT%H:%M:%SZ)"
pkg=github.com/ssemesh/ssemesh/internal/buildinfo
ldflags="-s -w -buildid= -X ${pkg}.version=${version} -X ${pkg}.commit=${commit} -X ${pkg}.date=${date}"

build_to() {
  local dir="$1"
  mkdir -p "$dir"
  for arch in amd64 arm64; do
    CGO_ENABLED=0 GOOS=linux GOARCH="$arch" GOFLAGS=-buildvcs=false \
      "$GO" build -trimpath -ldflags "$ldflags" -o "$dir/ssemesh_linux_${arch}" ./cmd/ssemesh
  done
  (cd "$dir" && sha256sum ssemesh_linux_amd64 ssemesh_linux_arm64 > SHA256SUMS)
}

if [ "$verify" = 1 ]; then
  [ -f "$out/SHA256SUMS" ] || { echo "no $out/SHA256SUMS to verify against; run $0 first" >&2; exit 1; }
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  # A fresh cache proves the bytes do not depend on what was built before.
  GOCACHE="$tmp/cache" build_to "$tmp/out"
  if ! diff -u "$out/SHA256SUMS" "$tmp/out/SHA256SUMS"; then
    echo "release build is not reproducible" >&2
    exit 1
  fi
  echo "reproducible: $(wc -l < "$out/SHA256SUMS") binaries match $out/SHA256SUMS"
  exit 0
fi

rm -rf "$out"
build_to "$out"
echo "$version ($commit, $date)"
cat "$out/SHA256SUMS"
