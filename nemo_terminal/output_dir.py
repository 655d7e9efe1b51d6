"""The one way a command creates or replaces its output directory (import, export, prepare, tiny-model, train).

Why one helper: `--force` used to delete whatever `--out` named, inputs and the current directory
included. The rules, checked before any work:

- an output never equals, contains or lies inside an input (symlinks resolved), force or not;
- a path below a file, an unwritable parent, or an output that is a file: one-line errors;
- `--force` replaces only a directory that carries this project's marker for that kind of output
  (a dataset's manifest.json, a checkpoint's model_config.json + checkpoint layout, an HF export's
  nemo_terminal_export.json), and never the current directory or one that contains it;
- the new output is written beside the old one and renamed into place, so a failure leaves the
  old one intact.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from nemo_terminal.errors import UserError

EXPORT_MARKER = "nemo_terminal_export.json"
"""Written into every HF directory we produce (export, tiny-model); `--force` may replace it later."""
DEMO_MARKER = "nemo_terminal_demo.json"


def _json_field(path: Path, key: str) -> object | None:
    try:
        return json.loads(path.read_text()).get(key)
    except (OSError, ValueError, AttributeError):
        return None


def _is_dataset(d: Path) -> bool:
    return str(_json_field(d / "manifest.json", "format") or "").startswith("nemo_terminal.packed/")


def _is_checkpoint(d: Path) -> bool:
    pointers = ("latest", "latest_checkpointed_iteration.txt")  # ours, Megatron-LM's tracker
    has_layout = any((d / p).is_file() for p in pointers) or (d / "release").is_dir() or any(d.glob("iter_*"))
    return (d / "model_config.json").is_file() and has_layout


@dataclass(frozen=True)
class OutputKind:
    """What a command writes, and how to recognise an earlier one that `--force` may replace."""

    name: str
    marker: str
    """The file(s) that mark it, named in errors."""
    is_ours: Callable[[Path], bool]


DATASET = OutputKind("prepared dataset", "manifest.json", _is_dataset)
CHECKPOINT = OutputKind("Megatron checkpoint directory", "model_config.json + latest/release/iter_*",
                        _is_checkpoint)
HF_EXPORT = OutputKind("Hugging Face directory written by nemo-terminal", EXPORT_MARKER,
                       lambda d: (d / EXPORT_MARKER).is_file())
DEMO = OutputKind("demo work directory", DEMO_MARKER, lambda d: (d / DEMO_MARKER).is_file())


def _overlap(out: Path, given: object, inputs: Sequence[str | os.PathLike | None], flag: str) -> None:
    """Compared with symlinks resolved, so a link to an input is that input."""
    for raw in inputs:
        if raw is None or not Path(raw).expanduser().exists():
            continue  # hub names, unset options: nothing on disk to protect
        inp = Path(raw).expanduser().resolve()
        if out == inp:
            raise UserError(f"{flag} {given} is the input {raw}; choose another directory")
        if inp.is_relative_to(out):
            raise UserError(f"{flag} {given} contains the input {raw}; choose a directory outside it")
        if out.is_relative_to(inp):
            raise UserError(f"{flag} {given} lies inside the input {raw}; choose a directory outside it")


def _writable_parent(out: Path, given: object, flag: str) -> None:
    """The nearest existing ancestor must be a directory we may create entries in."""
    parent = out.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"cannot create {flag} {given}: {parent} is a file, not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"cannot create {flag} {given}: {parent} is not writable; choose a directory you can write to")


def check_output(out: str | os.PathLike, kind: OutputKind, *, inputs: Sequence = (), force: bool = False,
                 refuse_existing: bool = True, flag: str = "--out") -> Path:
    """Every refusal, before any work; returns the resolved path. `refuse_existing=False` leaves an
    existing directory to the caller (prepare's re-run no-op, a training run's resume)."""
    path = Path(out).expanduser().resolve()
    _overlap(path, out, inputs, flag)
    if path.exists() and not path.is_dir():
        raise UserError(f"{flag} {out} exists and is a file, not a directory; --force never replaces files")
    _writable_parent(path, out, flag)
    if (refuse_existing or force) and Path.cwd().resolve().is_relative_to(path):
        raise UserError(f"{flag} {out} is the current directory or contains it, which is never replaced; "
                        "choose a new directory")
    if path.is_dir() and not os.access(path, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {out} is not writable; choose a directory you can write to")
    if not path.is_dir() or not any(path.iterdir()):
        return path
    if not force:
        if refuse_existing:
            raise UserError(f"{flag} {out} already exists and is not empty; pass --force to replace it "
                            "or choose another directory")
        return path
    if not kind.is_ours(path):
        raise UserError(f"{flag} {out} is not a {kind.name} (no {kind.marker}), so --force will not replace it; "
                        "delete it by hand or choose another directory")
    return path


def publish(tmp: Path, out: Path) -> None:
    """Move the finished `tmp` to `out`; an existing `out` is moved aside first and removed last."""
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    if out.exists():
        os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def staged_output(out: str | os.PathLike, kind: OutputKind, *, inputs: Sequence = (), force: bool = False,
                  flag: str = "--out") -> Iterator[Path]:
    """`check_output`, then a fresh sibling directory to write into, published as `out` on success
    and removed on failure (the old `out`, if any, is untouched until then)."""
    path = check_output(out, kind, inputs=inputs, force=force, flag=flag)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_dirs(path)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
    except OSError as err:
        raise UserError(f"cannot create {flag} {out}: {err.strerror}") from None
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if path.is_dir() and not any(path.iterdir()):
        path.rmdir()  # an empty directory needs no --force: replace it in place
    publish(tmp, path)


def remove_stale_temp_dirs(out: Path) -> None:
    """A killed writer leaves `.NAME.tmp-PID` beside `out`; remove those whose process is gone."""
    for tmp in out.parent.glob(f".{out.name}.tmp-*"):
        pid = tmp.name.rsplit("-", 1)[1]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(tmp, ignore_errors=True)
        except PermissionError:
            pass  # another user's live process


def looks_local(raw: str) -> bool:
    """A name that can only mean a local path: it starts with `.`, `~` or `/`, has more than one `/`
    or a backslash, names a data file, or its parent directory exists here. Hub names are `owner/name`."""
    if raw.startswith((".", "~", "/")) or raw.count("/") > 1 or "\\" in raw:
        return True
    if Path(raw.partition(":")[0]).suffix in (".jsonl", ".json", ".parquet", ".arrow", ".txt"):
        return True
    parent = Path(raw).parent
    return str(parent) not in ("", ".") and parent.is_dir()


def require_dir(path: str | os.PathLike, flag: str) -> Path:
    """An input directory that must exist: a one-line error naming the flag otherwise."""
    p = Path(path).expanduser()
    if not p.exists():
        raise UserError(f"{flag} {path} does not exist; check the path")
    if not p.is_dir():
        raise UserError(f"{flag} {path} is a file, not a directory")
    return p


def write_export_marker(out: Path, written_by: str, source: str | None = None) -> None:
    """Mark an HF directory as ours, so a later `--force` may replace it."""
    info = {"format": "nemo_terminal.hf_export/1", "written_by": written_by, "source": source}
    (Path(out) / EXPORT_MARKER).write_text(json.dumps(info, indent=2) + "\n")
