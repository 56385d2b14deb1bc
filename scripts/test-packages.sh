#!/usr/bin/env bash
# Tests what ssemesh ships besides its source: the release binaries, the
# Debian package (installed for real with dpkg, then purged) with its
# systemd unit, and the container images (Containerfile.release from the
# release binary; where containers can run, also a node started from it
# and Dockerfile built with a stand-in for its Go builder image).
#
#   scripts/test-packages.sh
#
# Needs root (dpkg -i, runuser, podman) on Debian; installs what it lacks
# with apt (systemd for systemd-analyze, podman, runc, ca-certificates).
# Prints a PASS or FAIL line per check and exits 1 when any check failed.
# It leaves nothing installed: the package is purged and the image removed
# (the ssemesh system user stays, as after any purge of the package).
#
# Environment:
#   SSEMESH_SKIP_PACKAGES=1         skip everything (exit 0), for machines
#                                   where installing a package is not wanted
#   SSEMESH_TEST_PACKAGES_REPLACE=1 purge an ssemesh package that is already
#                                   installed before testing (implied by CI=true)
#   SSEMESH_SKIP_CONTAINER=1        skip the container part
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${repo}"
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"
export DEBIAN_FRONTEND=noninteractive

if [[ "${SSEMESH_SKIP_PACKAGES:-0}" == 1 ]]; then
	echo "SKIP packages: SSEMESH_SKIP_PACKAGES=1"
	exit 0
fi

failures=0
pass() { printf 'PASS %s\n' "$*"; }
fail() { printf 'FAIL %s\n' "$*"; failures=$((failures + 1)); }
info() { printf '     %s\n' "$*"; }
# abort ends the run at a failure later checks depend on.
abort() { fail "$*"; printf 'packages: aborted after %s failure(s)\n' "${failures}"; exit 1; }
# check NAME COMMAND...: PASS when COMMAND succeeds, else FAIL with the end
# of its output.
check() {
	local name="$1" out
	shift
	if out="$("$@" 2>&1)"; then
		pass "${name}"
	else
		fail "${name}"
		[[ -n "${out}" ]] && sed 's/^/     | /' <<<"$(tail -n 5 <<<"${out}")"
	fi
	return 0
}

total_start=$(date +%s)
section_start=${total_start}
declare -a timings=()
section() {
	local now
	now=$(date +%s)
	if [[ -n "${section_name:-}" ]]; then
		timings+=("$(printf '%-10s %4ss' "${section_name}" $((now - section_start)))")
	fi
	section_name="$1"
	section_start=${now}
	printf '== %s\n' "$1"
}

if [[ "$(id -u)" != 0 ]]; then
	abort "packages: must run as root (it installs the .deb with dpkg); SSEMESH_SKIP_PACKAGES=1 skips it"
fi
command -v dpkg >/dev/null 2>&1 || abort "packages: needs dpkg (a Debian machine)"
command -v go >/dev/null 2>&1 || abort "packages: go is not on PATH"

apt_updated=0
# need COMMAND PACKAGE: installs PACKAGE when COMMAND is missing.
need() {
	command -v "$1" >/dev/null 2>&1 && return 0
	apt_install "$2" "$1"
}
# apt_install PACKAGE [FOR]
apt_install() {
	if [[ "${apt_updated}" == 0 ]]; then
		apt-get update -qq -o DPkg::Lock::Timeout=120
		apt_updated=1
	fi
	info "installing $1${2:+ (for $2)}"
	apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=120 "$1" >/dev/null
}

# dpkg_do ARGS...: dpkg, waiting up to two minutes while another dpkg or apt
# holds its lock.
dpkg_do() {
	local out rc=0 i
	for ((i = 0; i < 60; i++)); do
		out="$(dpkg "$@" 2>&1)" && rc=0 || rc=$?
		if [[ "${rc}" == 0 ]] || ! grep -q 'frontend lock\|database is locked\|lock was locked' <<<"${out}"; then
			break
		fi
		sleep 2
	done
	printf '%s\n' "${out}"
	return "${rc}"
}

work="$(mktemp -d)"
image="localhost/ssemesh:test-packages-$$"
container="ssemesh-test-packages-$$"
installed_by_us=0
podman_global=()
cleanup() {
	set +e
	if command -v podman >/dev/null 2>&1; then
		podman "${podman_global[@]}" rm -f "${container}" >/dev/null 2>&1
		podman rmi -f "${image}" "localhost/ssemesh:test-packages-src-$$" "localhost/ssemesh-test-golang:$$" >/dev/null 2>&1
	fi
	if [[ "${installed_by_us}" == 1 ]] && dpkg-query -W ssemesh >/dev/null 2>&1; then
		dpkg_do -P ssemesh >/dev/null 2>&1
	fi
	rm -rf "${work}"
}
trap cleanup EXIT

# ---------------------------------------------------------------------------
section "tools"
need systemd-analyze systemd
need runuser util-linux
[[ -f /etc/ssl/certs/ca-certificates.crt ]] || apt_install ca-certificates
if [[ "${SSEMESH_SKIP_CONTAINER:-0}" != 1 ]]; then
	need podman podman
	# runc runs containers where crun cannot (a sandbox without a full
	# cgroup hierarchy); podman is tried with its default runtime first.
	need runc runc
fi
pass "tools present"

# ---------------------------------------------------------------------------
section "release"
# What the Go build reads: when it changes during the test (someone editing
# the tree), binaries built at different moments cannot be compared.
tree_hash() {
	git ls-files -z -co --exclude-standard -- '*.go' go.mod go.sum 2>/dev/null \
		| xargs -0 sha256sum 2>/dev/null | sha256sum
}
tree_before="$(tree_hash)"
dist="${work}/dist"
if ! out="$(scripts/release.sh --out "${dist}" 2>&1)"; then
	sed 's/^/     | /' <<<"${out}"
	abort "scripts/release.sh builds the release"
fi
pass "scripts/release.sh builds ssemesh_linux_amd64, ssemesh_linux_arm64 and SHA256SUMS"
check "SHA256SUMS matches the binaries" bash -c "cd '${dist}' && sha256sum --check --quiet SHA256SUMS"
host_arch="$(dpkg --print-architecture)"
case "${host_arch}" in
	amd64|arm64) ;;
	*) abort "packages: no release binary for this machine's architecture ${host_arch}" ;;
esac
host_bin="${dist}/ssemesh_linux_${host_arch}"
version="$("${host_bin}" version | awk '{print $2}')"
[[ -n "${version}" ]] || abort "ssemesh version names the version"
info "version ${version}"
check "release binary is static (built with CGO_ENABLED=0)" \
	bash -c "go version -m '${host_bin}' | grep -q 'CGO_ENABLED=0'"

# ---------------------------------------------------------------------------
section "deb"
# The release version maps to a Debian version that sorts the same way.
while read -r given want; do
	got="$(deploy/package/build.sh --deb-version "${given}" 2>&1)" || got="error: ${got}"
	if [[ "${got}" == "${want}" ]]; then
		pass "Debian version of ${given} is ${want}"
	else
		fail "Debian version of ${given} is ${want}, got ${got}"
	fi
done <<'EOF'
v1.2.0 1.2.0
v1.2.0-rc.1 1.2.0~rc.1
v1.2.0-3-gabc1234 1.2.0+3.gabc1234
v1.2.0-3-gabc1234-dirty 1.2.0+3.gabc1234.dirty
v0.0.0-20261207001952-ea96d0f514b0 0.0.0~20261207001952.ea96d0f514b0
v0.0.0-20261207001952-ea96d0f514b0-dirty 0.0.0~20261207001952.ea96d0f514b0+dirty
v1.2.4-0.20261207001952-ea96d0f514b0 1.2.4~0.20261207001952.ea96d0f514b0
EOF
ordered=(0.0.0~20261207001952.ea96d0f514b0 0.0.0 1.2.0~rc.1 1.2.0 1.2.0+3.gabc1234 1.2.4~0.20261207001952.ea96d0f514b0 1.2.4)
order_ok=1
for ((i = 1; i < ${#ordered[@]}; i++)); do
	dpkg --compare-versions "${ordered[i - 1]}" lt "${ordered[i]}" || order_ok=0
done
if [[ "${order_ok}" == 1 ]]; then pass "Debian versions sort as the releases do"; else fail "Debian versions sort as the releases do"; fi

debdir="${work}/deb"
for arch in amd64 arm64; do
	if ! out="$(deploy/package/build.sh --arch "${arch}" --dist "${dist}" --out "${debdir}" 2>&1)"; then
		sed 's/^/     | /' <<<"$(tail -n 10 <<<"${out}")"
		[[ "${arch}" == "${host_arch}" ]] && abort "deploy/package/build.sh builds the ${arch} package"
		fail "deploy/package/build.sh builds the ${arch} package"
		continue
	fi
	debfile="$(tail -n1 <<<"${out}")"
	pass "deploy/package/build.sh builds $(basename "${debfile}")"
	check "${arch} package: Architecture ${arch}" test "$(dpkg-deb -f "${debfile}" Architecture)" = "${arch}"
	[[ "${arch}" == "${host_arch}" ]] && deb="${debfile}"
done
debver="$(deploy/package/build.sh --deb-version "${version}")"
check "package version is ${debver}" test "$(dpkg-deb -f "${deb}" Version)" = "${debver}"
check "package passes dpkg's own checks" dpkg-deb --info "${deb}"

if dpkg-query -W -f '${Status}' ssemesh 2>/dev/null | grep -Eq 'installed|config-files'; then
	if [[ "${SSEMESH_TEST_PACKAGES_REPLACE:-0}" == 1 || "${CI:-}" == true ]]; then
		info "purging the ssemesh package already on this machine"
		dpkg_do -P ssemesh >/dev/null
	else
		abort "ssemesh is already installed here; this test installs and purges it (set SSEMESH_TEST_PACKAGES_REPLACE=1 to let it)"
	fi
fi

installed_by_us=1
if ! out="$(dpkg_do -i "${deb}" 2>&1)"; then
	sed 's/^/     | /' <<<"${out}"
	abort "dpkg -i installs the package"
fi
pass "dpkg -i installs the package"
check "dpkg reports it installed" bash -c "dpkg-query -W -f '\${Status}' ssemesh | grep -qx 'install ok installed'"

out="$(/usr/bin/ssemesh version 2>&1)" || true
if [[ "${out}" == *"${version}"* ]]; then
	pass "ssemesh version names ${version}"
else
	fail "ssemesh version names ${version}: got ${out}"
fi
check "/usr/bin/ssemesh is the release binary" \
	test "$(sha256sum </usr/bin/ssemesh)" = "$(sha256sum <"${host_bin}")"

if getent passwd ssemesh >/dev/null; then
	IFS=: read -r _ _ uid gid _ home shell < <(getent passwd ssemesh)
	pass "user ssemesh exists (uid ${uid})"
	check "ssemesh is a system user (uid < 1000)" test "${uid}" -lt 1000
	check "ssemesh's primary group is ssemesh" test "$(getent group "${gid}" | cut -d: -f1)" = ssemesh
	check "ssemesh has no home and no login shell" test "${home}:${shell##*/}" = /nonexistent:nologin
else
	fail "user ssemesh exists"
fi

stat_is() { test "$(stat -c '%U:%G %a' "$1")" = "$2"; }
check "/etc/ssemesh is root:ssemesh 750" stat_is /etc/ssemesh "root:ssemesh 750"
check "/etc/ssemesh/ssemesh.yaml is root:ssemesh 640" stat_is /etc/ssemesh/ssemesh.yaml "root:ssemesh 640"
check "/etc/default/ssemesh is root:ssemesh 640" stat_is /etc/default/ssemesh "root:ssemesh 640"
check "/etc/default stays root:root 755" stat_is /etc/default "root:root 755"

conffiles="$(dpkg-query -W -f '${Conffiles}\n' ssemesh)"
for f in /etc/ssemesh/ssemesh.yaml /etc/default/ssemesh; do
	if grep -q "^ ${f} " <<<"${conffiles}"; then pass "conffile ${f}"; else fail "conffile ${f}: dpkg lists: ${conffiles}"; fi
done

out="$(runuser -u ssemesh -- /usr/bin/ssemesh run --check --config /etc/ssemesh/ssemesh.yaml 2>&1)" && rc=0 || rc=$?
if [[ "${rc}" == 0 && "${out}" == "configuration ok"* ]]; then
	pass "ssemesh run --check as user ssemesh accepts the installed configuration"
else
	fail "ssemesh run --check as user ssemesh accepts the installed configuration (exit ${rc}): ${out}"
fi
out="$(runuser -u nobody -- /usr/bin/ssemesh run --check --config /etc/ssemesh/ssemesh.yaml 2>&1)" && rc=0 || rc=$?
if [[ "${rc}" == 2 && "${out}" == *"permission denied"* ]]; then
	pass "other users cannot read the configuration (run --check as nobody exits 2)"
else
	fail "other users cannot read the configuration: run --check as nobody exited ${rc}: ${out}"
fi

unit=/lib/systemd/system/ssemesh.service
check "systemd-analyze verify ${unit}" bash -c "out=\$(systemd-analyze verify '${unit}' 2>&1); echo \"\$out\"; [ -z \"\$out\" ]"
# Exposure 0 (locked down) to 10 (unprotected); --threshold is in tenths.
check "systemd-analyze security rates the unit 2.0 or better" \
	systemd-analyze security --offline=true --threshold=20 --no-pager "${unit}"
unit_has() { grep -qxF -- "$1" "${unit}"; }
for line in 'User=ssemesh' 'ExecStart=/usr/bin/ssemesh run --config /etc/ssemesh/ssemesh.yaml' \
	'ExecReload=/bin/kill -HUP $MAINPID' 'KillSignal=SIGTERM' 'EnvironmentFile=-/etc/default/ssemesh' \
	'CapabilityBoundingSet=' 'AmbientCapabilities='; do
	check "unit has ${line}" unit_has "${line}"
done
# The unit must let the node finish its longest shutdown and hold its
# clients' sockets (defaults from docs/configuration.md, sections 9 and 10).
stop_s="$(sed -n 's/^TimeoutStopSec=\([0-9]*\)s\?$/\1/p' "${unit}")"
check "TimeoutStopSec (${stop_s:-unset}s) exceeds the default longest shutdown (drain 10s + 15s + 5s + handoff 10s)" \
	test "${stop_s:-0}" -gt 40
nofile="$(sed -n 's/^LimitNOFILE=\([0-9]*\)$/\1/p' "${unit}")"
check "LimitNOFILE (${nofile:-unset}) exceeds max_clients + max_streams (19000 + 10000)" test "${nofile:-0}" -gt 29000
check "unit is enabled (multi-user.target.wants)" \
	test -L /etc/systemd/system/multi-user.target.wants/ssemesh.service

# A changed conffile survives reinstalling the package.
echo "# local change $$" >>/etc/ssemesh/ssemesh.yaml
if out="$(dpkg_do -i "${deb}" 2>&1)"; then
	pass "dpkg -i again (reinstall) succeeds"
	check "reinstall keeps the administrator's /etc/ssemesh/ssemesh.yaml" grep -qx "# local change $$" /etc/ssemesh/ssemesh.yaml
	check "reinstall keeps the configuration's ownership" stat_is /etc/ssemesh/ssemesh.yaml "root:ssemesh 640"
else
	sed 's/^/     | /' <<<"${out}"
	fail "dpkg -i again (reinstall) succeeds"
fi

check "dpkg -r removes the package" dpkg_do -r ssemesh
check "/usr/bin/ssemesh is gone after dpkg -r" test ! -e /usr/bin/ssemesh
check "the unit file is gone after dpkg -r" test ! -e "${unit}"
check "the configuration stays after dpkg -r" test -f /etc/ssemesh/ssemesh.yaml
check "dpkg -P purges the package" dpkg_do -P ssemesh
check "dpkg no longer knows ssemesh" bash -c '! dpkg-query -W -f "\${Status}" ssemesh 2>/dev/null | grep -q .'
check "/etc/ssemesh is gone after purge" test ! -e /etc/ssemesh
check "/etc/default/ssemesh is gone after purge" test ! -e /etc/default/ssemesh
check "no enablement or mask links are left" bash -c \
	'! ls /etc/systemd/system/ssemesh.service /etc/systemd/system/*.wants/ssemesh.service 2>/dev/null | grep -q .'
installed_by_us=0
getent passwd ssemesh >/dev/null && info "user ssemesh kept after purge, as intended"

# ---------------------------------------------------------------------------
if [[ "${SSEMESH_SKIP_CONTAINER:-0}" == 1 ]]; then
	echo "SKIP container: SSEMESH_SKIP_CONTAINER=1"
else
	section "container"
	# The build context is the release directory with the CA certificates.
	cp /etc/ssl/certs/ca-certificates.crt "${dist}/"
	if ! out="$(podman build --format docker --layers=false --platform "linux/${host_arch}" \
		--build-arg VERSION="${version}" -f deploy/container/Containerfile.release -t "${image}" "${dist}" 2>&1)"; then
		sed 's/^/     | /' <<<"$(tail -n 10 <<<"${out}")"
		abort "podman build of deploy/container/Containerfile.release"
	fi
	pass "podman build of deploy/container/Containerfile.release"

	inspect() { podman image inspect --format "$1" "${image}" 2>&1; }
	check "image user is 65532:65532" test "$(inspect '{{.Config.User}}')" = 65532:65532
	check "image entrypoint is [/ssemesh]" test "$(inspect '{{json .Config.Entrypoint}}')" = '["/ssemesh"]'
	check "image command is run --config /etc/ssemesh/ssemesh.yaml" \
		test "$(inspect '{{json .Config.Cmd}}')" = '["run","--config","/etc/ssemesh/ssemesh.yaml"]'
	check "image healthcheck runs /ssemesh health" \
		test "$(inspect '{{json .HealthCheck.Test}}')" = '["CMD","/ssemesh","health"]'
	check "image exposes 8080/tcp 9090/tcp 7946/tcp 7946/udp" \
		test "$(inspect '{{range $p, $_ := .Config.ExposedPorts}}{{$p}} {{end}}')" = "7946/tcp 7946/udp 8080/tcp 9090/tcp "
	check "image stop signal is SIGTERM" test "$(inspect '{{.Config.StopSignal}}')" = SIGTERM
	check "image architecture is ${host_arch}" test "$(inspect '{{.Architecture}}')" = "${host_arch}"
	check "image version label is ${version}" \
		test "$(inspect '{{index .Config.Labels "org.opencontainers.image.version"}}')" = "${version}"

	# The image's file system: exactly the binary and the CA certificates.
	# `podman create` and `export` need no OCI runtime.
	rootfs="${work}/rootfs"
	mkdir -p "${rootfs}"
	if cid="$(podman create "${image}" 2>&1)" && podman export "${cid}" | tar -C "${rootfs}" -xf -; then
		podman rm -f "${cid}" >/dev/null 2>&1 || true
		files="$(cd "${rootfs}" && find . -type f -size +0 | sort | tr '\n' ' ')"
		check "image holds only /ssemesh and the CA certificates" \
			test "${files}" = "./etc/ssl/certs/ca-certificates.crt ./ssemesh "
		check "image's /ssemesh is the release binary" \
			test "$(sha256sum <"${rootfs}/ssemesh")" = "$(sha256sum <"${host_bin}")"
		check "image's /ssemesh is executable by anyone" test "$(stat -c %a "${rootfs}/ssemesh")" = 755
		out="$("${rootfs}/ssemesh" version 2>&1)" || true
		if [[ "${out}" == *"${version}"* ]]; then pass "image's /ssemesh version names ${version}"; else fail "image's /ssemesh version: ${out}"; fi
	else
		fail "export the image's file system: ${cid}"
	fi

	# Running the image needs an OCI runtime that works on this machine.
	# Sandboxes without a full cgroup hierarchy or CAP_SYS_RESOURCE refuse
	# crun (and runc with podman's default rlimits); runc with lowered
	# rlimits often works there.
	ran=0
	env_error='setrlimit|rlimit|cgroup|OCI permission denied|crun: |runc: '
	declare -a run_opts=()
	for attempt in default runc; do
		case "${attempt}" in
			default) podman_global=(); run_opts=() ;;
			runc)
				command -v runc >/dev/null 2>&1 || continue
				podman_global=(--runtime runc)
				run_opts=(--ulimit nofile=1024:1024 --ulimit nproc=1024:1024)
				;;
		esac
		if out="$(podman "${podman_global[@]}" run --rm --network none --no-healthcheck "${run_opts[@]}" "${image}" version 2>&1)"; then
			if [[ "${out}" == *"${version}"* ]]; then
				pass "podman run (${attempt} runtime) ${image} version names ${version}"
				ran=1
			else
				fail "podman run (${attempt} runtime) ${image} version: ${out}"
				ran=2
			fi
			break
		fi
		err="$(grep -v 'level=error msg="Removing timer\|unable to get systemd connection' <<<"${out}" | tail -n 2)"
		if grep -Eq "${env_error}" <<<"${err}"; then
			info "podman run (${attempt} runtime) cannot run containers here: ${err}"
		else
			fail "podman run (${attempt} runtime) ${image} version: ${err}"
			ran=2
			break
		fi
	done
	if [[ "${ran}" == 0 ]]; then
		echo "SKIP running the image: no OCI runtime works here (see above); its file system and binary were checked instead"
	elif [[ "${ran}" == 1 ]]; then
		# A node from the image, with the package's example configuration:
		# healthy by its own HEALTHCHECK, running as 65532, drained on stop.
		cfg="${work}/etc-ssemesh"
		mkdir -p "${cfg}"
		install -m 0644 deploy/package/ssemesh.yaml "${cfg}/ssemesh.yaml"
		if out="$(podman "${podman_global[@]}" run -d --name "${container}" --network none "${run_opts[@]}" \
			-v "${cfg}:/etc/ssemesh:ro" "${image}" 2>&1)"; then
			healthy=0
			for _ in $(seq 1 30); do
				if podman "${podman_global[@]}" healthcheck run "${container}" >/dev/null 2>&1; then
					healthy=1
					break
				fi
				sleep 0.5
			done
			if [[ "${healthy}" == 1 ]]; then
				pass "the image's HEALTHCHECK (/ssemesh health) reports the node healthy"
			else
				fail "the image's HEALTHCHECK reports the node healthy: $(podman "${podman_global[@]}" logs "${container}" 2>&1 | tail -n 3)"
			fi
			pid="$(podman "${podman_global[@]}" inspect --format '{{.State.Pid}}' "${container}")"
			check "the node runs as uid 65532" test "$(awk '/^Uid:/ {print $2}' "/proc/${pid}/status" 2>/dev/null)" = 65532
			podman "${podman_global[@]}" stop -t 60 "${container}" >/dev/null 2>&1 || true
			code="$(podman "${podman_global[@]}" inspect --format '{{.State.ExitCode}}' "${container}")"
			check "podman stop (SIGTERM) drains the node and it exits 0" test "${code}" = 0
			podman "${podman_global[@]}" rm -f "${container}" >/dev/null 2>&1 || true
		else
			fail "podman run -d of the image with the example configuration: $(tail -n 2 <<<"${out}")"
		fi

		# deploy/container/Dockerfile builds from source in golang:1.26-bookworm,
		# which no registry here provides. A stand-in with this machine's Go
		# (and a shell, the C library and the CA certificates) runs the same
		# steps; the binary must be the release binary, byte for byte.
		stand_in="localhost/ssemesh-test-golang:$$"
		goroot="$(go env GOROOT)"
		sys="${work}/golang-rootfs"
		mkdir -p "${sys}/bin" "${sys}/usr/local" "${sys}/etc/ssl/certs" "${sys}/tmp"
		chmod 1777 "${sys}/tmp"
		cp "$(readlink -f /bin/sh)" "${sys}/bin/sh"
		for lib in $(ldd /bin/sh | grep -o '/[^ ]*'); do
			mkdir -p "${sys}$(dirname "${lib}")"
			cp "$(readlink -f "${lib}")" "${sys}${lib}"
		done
		cp -a "${goroot}" "${sys}/usr/local/go"
		cp /etc/ssl/certs/ca-certificates.crt "${sys}/etc/ssl/certs/"
		src_image="localhost/ssemesh:test-packages-src-$$"
		if tar -C "${sys}" -c . | podman import \
			--change 'ENV PATH=/usr/local/go/bin:/usr/bin:/bin' --change 'WORKDIR /' \
			- "${stand_in}" >/dev/null 2>&1; then
			if out="$(podman "${podman_global[@]}" build --format docker --layers=false "${run_opts[@]}" \
				--network host --platform "linux/${host_arch}" --build-arg GO_IMAGE="${stand_in}" \
				--build-arg VERSION="${version}" --build-arg COMMIT="$(git rev-parse HEAD 2>/dev/null || echo unknown)" \
				--build-arg DATE="$(git log -1 --format=%cI 2>/dev/null || true)" \
				-f deploy/container/Dockerfile -t "${src_image}" . 2>&1)"; then
				pass "podman build of deploy/container/Dockerfile (builder: this machine's $(go env GOVERSION))"
				srcfs="${work}/src-rootfs"
				mkdir -p "${srcfs}"
				cid="$(podman create "${src_image}")"
				podman export "${cid}" | tar -C "${srcfs}" -xf -
				podman rm -f "${cid}" >/dev/null 2>&1 || true
				if [[ "$(tree_hash)" != "${tree_before}" ]]; then
					echo "SKIP Dockerfile's binary against the release binary: the source tree changed during the test"
				else
					check "Dockerfile builds the release binary, byte for byte" \
						test "$(sha256sum <"${srcfs}/ssemesh")" = "$(sha256sum <"${host_bin}")"
				fi
				check "Dockerfile's image has the same user, entrypoint and healthcheck" test \
					"$(podman image inspect --format '{{.Config.User}} {{json .Config.Entrypoint}} {{json .Config.Cmd}} {{json .HealthCheck}} {{json .Config.ExposedPorts}}' "${src_image}")" = \
					"$(inspect '{{.Config.User}} {{json .Config.Entrypoint}} {{json .Config.Cmd}} {{json .HealthCheck}} {{json .Config.ExposedPorts}}')"
			else
				sed 's/^/     | /' <<<"$(grep -v 'level=error' <<<"${out}" | tail -n 10)"
				fail "podman build of deploy/container/Dockerfile"
			fi
		else
			fail "podman import of a stand-in Go builder image"
		fi
		podman rmi -f "${src_image}" "${stand_in}" >/dev/null 2>&1 || true
	fi
	podman rmi -f "${image}" >/dev/null 2>&1 || true
fi

section "done"
printf 'packages: %s failure(s) in %ss\n' "${failures}" $(($(date +%s) - total_start))
printf '  %s\n' "${timings[@]}"
[[ "${failures}" == 0 ]]
