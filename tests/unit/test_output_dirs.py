"""--out and --force never destroy an input, the current directory or a foreign directory (issue 14 #1),
and path mistakes are one-line errors before any work (#10)."""

from __future__ import annotations

import os

import pytest

from nemo_terminal.cli import main
from nemo_terminal.data.pipeline.synthetic import write_jsonl
from nemo_terminal.errors import UserError
from nemo_terminal.output_dir import EXPORT_MARKER, HF_EXPORT, looks_local, staged_output


def _fails(capsys, argv: list[str]) -> str:
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err.strip()
    assert code == 1 and err.startswith("error: ") and len(err.splitlines()) == 1, err
    return err


def _snapshot(d) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.fixture
def imported(tokenizer_dir, tmp_path):
    """runs/x/meg: a checkpoint directory as `nemo-terminal import` lays it out (weights are not read
    before the refusals under test, so the iter dir only needs its marker files)."""
    import json
    import shutil

    from nemo_terminal.models.tiny import tiny_config

    meg = tmp_path / "runs" / "x" / "meg"
    (meg / "iter_0000000").mkdir(parents=True)
    for name in ("metadata.json", ".metadata"):
        (meg / "iter_0000000" / name).write_text("{}")
    (meg / "latest").write_text("iter_0000000\n")
    cfg = tiny_config(num_layers=1, hidden_size=64, num_heads=4, num_kv_heads=2, head_dim=32, ffn_size=128,
                      tie_embeddings=True)
    (meg / "model_config.json").write_text(json.dumps(cfg.to_hf_dict()))
    shutil.copytree(tokenizer_dir, meg / "tokenizer")
    return meg


@pytest.fixture
def corpus(tmp_path):
    corp = tmp_path / "corp"
    write_jsonl(corp / "a.jsonl", 3, seed=0)
    return corp


def test_export_over_the_checkpoints_parent_is_refused(imported, capsys):
    before = _snapshot(imported)
    err = _fails(capsys, ["export", "--megatron-dir", imported, "--out", imported.parent, "--force"])
    assert "contains the input" in err and str(imported.parent) in err
    err = _fails(capsys, ["export", "--megatron-dir", imported, "--out", imported / "hf", "--force"])
    assert "lies inside the input" in err
    assert _snapshot(imported) == before


def test_import_onto_its_own_input_is_refused(tiny_tied_dir, capsys):
    before = _snapshot(tiny_tied_dir)
    err = _fails(capsys, ["import", "--hf-dir", tiny_tied_dir, "--out", tiny_tied_dir, "--force"])
    assert "is the input" in err
    assert _snapshot(tiny_tied_dir) == before


def test_prepare_onto_its_input_or_the_cwd_is_refused(corpus, tokenizer_dir, tmp_path, capsys, monkeypatch):
    before = _snapshot(corpus)
    base = ["prepare", "--input", corpus, "--tokenizer", tokenizer_dir, "--seq-length", "1024"]
    assert "is the input" in _fails(capsys, base + ["--out", corpus, "--force"])
    assert "contains the input" in _fails(capsys, base + ["--out", tmp_path, "--force"])
    link = tmp_path / "link"
    link.symlink_to(corpus)
    assert "is the input" in _fails(capsys, base + ["--out", link, "--force"])  # symlinks resolved
    cwd = tmp_path / "work"
    cwd.mkdir()
    (cwd / "notes.txt").write_text("mine")
    monkeypatch.chdir(cwd)
    err = _fails(capsys, base + ["--out", ".", "--force"])
    assert "current directory" in err
    assert (cwd / "notes.txt").read_text() == "mine" and _snapshot(corpus) == before


def test_force_replaces_only_our_own_outputs(tmp_path, capsys):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("years of work")
    err = _fails(capsys, ["tiny-model", "--out", foreign, "--num-layers", "1", "--force"])
    assert "delete it by hand" in err and EXPORT_MARKER in err
    assert (foreign / "thesis.tex").read_text() == "years of work"
    ours = tmp_path / "ours"
    assert main(["tiny-model", "--out", str(ours), "--num-layers", "1"]) == 0
    assert (ours / EXPORT_MARKER).is_file()
    assert main(["tiny-model", "--out", str(ours), "--num-layers", "1", "--seed", "1", "--force"]) == 0
    assert not list(tmp_path.glob(".ours.*"))  # nothing left beside it
    (ours / EXPORT_MARKER).unlink()  # what an export written before the marker looks like
    assert "delete it by hand" in _fails(capsys, ["tiny-model", "--out", ours, "--num-layers", "1", "--force"])


def test_a_failed_replacement_leaves_the_old_output_intact(tmp_path):
    out = tmp_path / "hf"
    out.mkdir()
    (out / EXPORT_MARKER).write_text("{}")
    (out / "model.safetensors").write_text("old weights")
    with pytest.raises(RuntimeError, match="disk full"), staged_output(out, HF_EXPORT, force=True) as tmp:
        (tmp / "model.safetensors").write_text("half")
        raise RuntimeError("disk full")
    assert (out / "model.safetensors").read_text() == "old weights"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf"]
    stale = tmp_path / ".hf.tmp-999999999"  # left by a killed writer (no such pid)
    stale.mkdir()
    with staged_output(out, HF_EXPORT, force=True) as tmp:
        (tmp / EXPORT_MARKER).write_text("{}")
        (tmp / "model.safetensors").write_text("new weights")
    assert (out / "model.safetensors").read_text() == "new weights"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf"]


def test_path_errors_are_one_line_and_early(tmp_path, tokenizer_dir, corpus, capsys):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    assert "is a file" in _fails(capsys, ["tiny-model", "--out", a_file / "sub"])
    assert "exists and is a file" in _fails(capsys, ["tiny-model", "--out", a_file, "--force"])
    assert "does not exist" in _fails(capsys, ["verify", "--hf-dir", tmp_path / "typo", "--megatron-dir", tmp_path])
    assert "does not exist" in _fails(capsys, ["import", "--hf-dir", tmp_path / "typo", "--out", tmp_path / "m"])
    assert "does not exist" in _fails(capsys, ["export", "--megatron-dir", tmp_path / "typo", "--out", tmp_path / "o"])
    base = ["prepare", "--tokenizer", tokenizer_dir, "--seq-length", "1024", "--out", tmp_path / "ds"]
    typo = f"{corpus}/a.jsonnl"  # looks local: never sent to the Hub
    assert "no such file" in _fails(capsys, base + ["--input", typo])
    assert "does not exist" in _fails(capsys, ["prepare", "--input", corpus, "--tokenizer", tmp_path / "tok",
                                               "--seq-length", "1024", "--out", tmp_path / "ds"])


def test_unwritable_out_is_refused_before_any_work(tmp_path, capsys):
    """Root may write to any directory, so as root (CI) a read-only mount stands in: /proc/sys is one
    in containers."""
    if os.geteuid() == 0:
        if os.access("/proc/sys", os.W_OK):
            pytest.skip("root, and /proc/sys is writable here: no unwritable directory to try")
        assert "not writable" in _fails(capsys, ["tiny-model", "--out", "/proc/sys/nemo_terminal_test/m"])
        return
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert "not writable" in _fails(capsys, ["tiny-model", "--out", locked / "m"])
    finally:
        locked.chmod(0o700)


@pytest.mark.parametrize("name, local", [
    ("nvidia/Terminal-Corpus", False), ("nvidia/Terminal-Corpus:skill_based_easy", False),
    ("./corpus", True), ("~/corpus", True), ("/data/corpus", True), ("data/x/corpus", True),
    ("owner/corpus.jsonl", True), ("owner/corpus.parquet", True),
])
def test_what_looks_local(name, local):
    assert looks_local(name) is local


def test_a_typo_next_to_an_existing_dir_is_local(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    assert looks_local("data/corpus") and not looks_local("nvidia/corpus")


def test_train_run_dir_apart_from_inputs(tmp_path):
    from nemo_terminal.training.config import check_run_paths, load_config

    meg, data = tmp_path / "meg", tmp_path / "data"
    meg.mkdir()
    data.mkdir()
    recipe = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "tiny_cpu.yaml")
    for run_dir, expected in ((meg, "is the input"), (data / "run", "lies inside the input"),
                              (tmp_path, "contains the input")):
        cfg = load_config(recipe, [f"model.megatron_dir={meg}", f"data.path={data}", f"run_dir={run_dir}"])
        with pytest.raises(UserError, match=expected) as err:
            check_run_paths(cfg)
        assert "run_dir" in str(err.value)
    cfg = load_config(recipe, [f"model.megatron_dir={meg}", f"data.path={tmp_path / 'nope'}",
                               f"run_dir={tmp_path / 'run'}"])
    with pytest.raises(UserError, match="data.path=.* does not exist"):
        check_run_paths(cfg)
    check_run_paths(load_config(recipe, [f"model.megatron_dir={meg}", f"data.path={data}",
                                         f"run_dir={tmp_path / 'run'}"]))
