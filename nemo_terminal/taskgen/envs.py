"""The 9 domain environment images: their Dockerfiles (package data), names and build commands.

The paper pre-builds one image per domain instead of a Dockerfile per task, so no task needs a
Dockerfile repair loop; a task's own Dockerfile is `FROM <domain image>` plus a COPY of its files.
The base image is a build argument: a public Python image by default, an offline Debian image
(FACTS.md §8) where no registry can be reached.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from nemo_terminal.errors import UserError
from nemo_terminal.taskgen.resources import domains, read_text

DEFAULT_BASE_IMAGE = "python:3.12-slim-bookworm"
DEFAULT_IMAGE_PREFIX = "nemo-terminal"
IMAGE_TAG = "1"  # bump when the Dockerfiles change what the images hold
RUNTIMES = ("docker", "podman")


def dockerfile(domain: str) -> str:
    if domain not in domains():
        raise UserError(f"unknown domain {domain!r}; choose from {domains()}")
    return read_text("envs", f"{domain}.Dockerfile")


def image_name(domain: str, prefix: str = DEFAULT_IMAGE_PREFIX) -> str:
    return f"{prefix}/{domain}:{IMAGE_TAG}"


def _arg_default(text: str, name: str) -> str:
    m = re.search(rf'^ARG {name}="([^"]*)"', text, re.MULTILINE)
    return m.group(1) if m else ""


def image_note(domain: str) -> str:
    """What the image provides, from its Dockerfile (told to the generator)."""
    text = dockerfile(domain)
    pip = _arg_default(text, "PIP_PACKAGES").split()
    apt = _arg_default(text, "APT_PACKAGES").split()
    return (f"Python 3 with {', '.join(p.split('==')[0] for p in pip) or 'pytest'}, "
            f"and the command-line tools {', '.join(apt) or 'of a minimal Debian'}")


def write_dockerfiles(out_dir: Path, selected: list[str] | None = None) -> list[Path]:
    """<out_dir>/<domain>.Dockerfile for each selected domain."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for d in selected or domains():
        path = out_dir / f"{d}.Dockerfile"
        path.write_text(dockerfile(d), encoding="utf-8")
        written.append(path)
    return written


def build_command(runtime: str, domain: str, dockerfile_path: Path, base_image: str, prefix: str,
                  offline: bool) -> list[str]:
    """The `docker|podman build` argv for one domain image."""
    cmd = [runtime, "build", "-t", image_name(domain, prefix), "-f", str(dockerfile_path),
           "--build-arg", f"BASE_IMAGE={base_image}"]
    if offline:  # the offline base already holds python3, pytest and tmux; nothing to fetch
        cmd += ["--build-arg", "APT_PACKAGES=", "--build-arg", "PIP_PACKAGES="]
    return cmd + [str(dockerfile_path.parent)]


def build_images(out_dir: Path, runtime: str, base_image: str, prefix: str, offline: bool,
                 selected: list[str] | None = None, dry_run: bool = False) -> list[list[str]]:
    """Write the Dockerfiles and build them one by one; returns the commands (run unless dry_run)."""
    if runtime not in RUNTIMES:
        raise UserError(f"--runtime must be one of {RUNTIMES}, got {runtime!r}")
    if not dry_run and shutil.which(runtime) is None:
        other = "podman" if runtime == "docker" else "docker"
        raise UserError(f"{runtime} is not on PATH; install it or pass --runtime {other}")
    commands = [build_command(runtime, p.stem, p, base_image, prefix, offline)
                for p in write_dockerfiles(out_dir, selected)]
    if not dry_run:
        for cmd in commands:
            if subprocess.run(cmd).returncode != 0:
                raise UserError(f"image build failed: {' '.join(cmd)}")
    return commands
