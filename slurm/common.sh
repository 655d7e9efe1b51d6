# shellcheck shell=bash
# Shared by train.sbatch, convert.sbatch and prepare.sbatch: variable defaults and the container
# flags. Sourced from "$PROJECT_DIR/slurm/common.sh" because sbatch runs a *copy* of the batch
# script from its spool directory, so the script cannot find its siblings through $0.
#
# Variables (all optional here; each script adds its own):
#   PROJECT_DIR       the nemo_terminal checkout            default: the sbatch submit directory
#   PYTHON            interpreter inside the container      default: python
#   CONTAINER_IMAGE   NGC image for pyxis/enroot            default: nvcr.io/nvidia/pytorch:25.11-py3
#                     set to "" or "none" to run on the host (no container). 25.11 is the image
#                     megatron-core 0.16.1's own CI builds on (its docker/.ngc_version.dev); it ships
#                     TE 2.x and the pip constraint file that keeps its torch (docs/cluster.md)
#   CONTAINER_MOUNTS  pyxis --container-mounts (src:dst,...) default: "$PROJECT_DIR:$PROJECT_DIR"
#                     add the directories of your data, checkpoints and runs
#                     (e.g. CONTAINER_MOUNTS="$PROJECT_DIR:$PROJECT_DIR,/lustre/me:/lustre/me")

PROJECT_DIR="${PROJECT_DIR:-${SLURM_SUBMIT_DIR:-$PWD}}"
PYTHON="${PYTHON:-python}"
# ${X-default} (no colon): an explicitly empty CONTAINER_IMAGE means "no container".
CONTAINER_IMAGE="${CONTAINER_IMAGE-nvcr.io/nvidia/pytorch:25.11-py3}"
CONTAINER_MOUNTS="${CONTAINER_MOUNTS:-$PROJECT_DIR:$PROJECT_DIR}"
export PROJECT_DIR PYTHON
# The checkout is imported from the mount, so code edits need no image rebuild; the image (or the
# host environment) provides the dependencies (see docs/cluster.md, "Installation").
export PYTHONPATH="$PROJECT_DIR${PYTHONPATH:+:$PYTHONPATH}"

# Extra srun arguments that put a step inside the container; empty when there is no container, so
# `srun ${CONTAINER_ARGS[@]+"${CONTAINER_ARGS[@]}"} ...` runs on the host unchanged.
CONTAINER_ARGS=()
if [[ -n "$CONTAINER_IMAGE" && "$CONTAINER_IMAGE" != "none" ]]; then
    if srun --help 2>&1 | grep -q -- "--container-image"; then
        # shellcheck disable=SC2034  # used by the scripts that source this file
        CONTAINER_ARGS=(--container-image="$CONTAINER_IMAGE" --container-mounts="$CONTAINER_MOUNTS"
                        --container-workdir="$PROJECT_DIR")
    else
        echo "warning: srun has no --container-image (pyxis is not installed): running on the host," \
             "ignoring CONTAINER_IMAGE=$CONTAINER_IMAGE" >&2
    fi
fi

die() {
    echo "error: $*" >&2
    exit 2
}

require_var() {
    # require_var NAME "what it is": fail early, before any srun, when a required variable is unset.
    local name="$1" what="$2"
    [[ -n "${!name:-}" ]] || die "$name is not set: $what"
}

show_settings() {
    # Echo the named variables (never credentials: callers list only paths and sizes).
    local name
    for name in "$@"; do
        printf '  %-18s %s\n' "$name" "${!name:-}"
    done
}
