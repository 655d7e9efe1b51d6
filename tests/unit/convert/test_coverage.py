"""Coverage is a hard error both ways: the typed transforms, the tied lm_head row, and export
refusing a checkpoint tensor that no mapping row covers (it would otherwise be dropped)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from nemo_terminal.convert.mapping import (
    Pair,
    Transform,
    check_coverage,
    check_tied_copies,
    expand,
    hf_to_megatron,
    megatron_shape,
    megatron_to_hf,
    tied_copies,
)
from nemo_terminal.errors import UserError
from nemo_terminal.models.qwen3 import Qwen3Config
from nemo_terminal.testing import run_distributed

SMALL = dict(num_hidden_layers=2, hidden_size=6, num_attention_heads=4, num_key_value_heads=2, head_dim=3,
             intermediate_size=5, vocab_size=11)


def _hf_inputs(transform: Transform, cfg: Qwen3Config) -> list[torch.Tensor]:
    h, d = cfg.hidden_size, cfg.head_dim
    shapes = {Transform.IDENTITY: [(7, h)], Transform.GATE_UP: [(5, h)] * 2,
              Transform.QKV: [(cfg.num_attention_heads * d, h), (cfg.num_key_value_heads * d, h),
                              (cfg.num_key_value_heads * d, h)],
              Transform.TIED_COPY: [(11, h)] * 2}[transform]  # KeyError here: a new transform needs a case
    tensors = [torch.randn(s) for s in shapes]
    if transform is Transform.TIED_COPY:
        tensors[0] = tensors[1].clone()
    return tensors


@pytest.mark.parametrize("transform", list(Transform))
def test_every_transform_states_both_directions_its_shape_and_row_selection(transform):
    cfg = Qwen3Config(**SMALL)
    hf = _hf_inputs(transform, cfg)
    meg = hf_to_megatron(transform, hf, cfg)
    pair = Pair("x", None, tuple(f"t{i}" for i in range(len(hf))), transform)
    assert tuple(meg.shape) == megatron_shape(pair, [tuple(t.shape) for t in hf])
    back = megatron_to_hf(transform, meg, cfg)
    assert len(back) == len(hf) and all(torch.equal(a, b) for a, b in zip(back, hf, strict=True))
    if transform.selects_rows:  # what export's byte copy assumes: every HF row is one megatron row
        rows = {tuple(r.tolist()) for r in meg}
        assert all(tuple(r.tolist()) in rows for t in back for r in t)


def test_tied_copy_row_is_checked_and_never_converted():
    tied, untied = Qwen3Config(**SMALL, tie_word_embeddings=True), Qwen3Config(**SMALL)
    assert [p.hf for p in tied_copies(tied)] == [("lm_head.weight", "model.embed_tokens.weight")]
    assert tied_copies(untied) == []
    assert "lm_head.weight" not in [h for p in expand(tied) for h in p.hf]
    pairs = expand(tied)
    hf = [h for p in pairs for h in p.hf]
    meg = [(p.megatron, p.layer) for p in pairs]
    with pytest.raises(UserError, match=r"no mapping covers \[lm_head.weight\]"):
        check_coverage(pairs, hf + ["lm_head.weight"], meg, "hf", "meg")
    check_coverage(pairs, hf + ["lm_head.weight"], meg, "hf", "meg", optional_hf=["lm_head.weight"])


def test_tied_lm_head_equal_accepted_unequal_refused():
    cfg = Qwen3Config(**SMALL, tie_word_embeddings=True)
    embed = torch.randn(11, 6, dtype=torch.bfloat16)
    files = {"model.embed_tokens.weight": embed, "lm_head.weight": embed.clone()}
    read = lambda names: [files[n] for n in names]  # noqa: E731
    check_tied_copies(cfg, files, read, "hf")
    check_tied_copies(cfg, {"model.embed_tokens.weight": embed}, read, "hf")  # absent: nothing to check
    files["lm_head.weight"] = embed.clone()
    files["lm_head.weight"][3, 2] = -files["lm_head.weight"][3, 2] + 1  # one element differs
    with pytest.raises(UserError, match="hf: lm_head.weight differs from model.embed_tokens.weight"):
        check_tied_copies(cfg, files, read, "hf")
    files["lm_head.weight"] = embed.float()  # same values, another dtype: not bitwise equal
    with pytest.raises(UserError, match="tie_word_embeddings=true"):
        check_tied_copies(cfg, files, read, "hf")


def _with_lm_head(hf_dir: Path, dst: Path, perturb: bool) -> Path:
    from safetensors.torch import load_file, save_file

    shutil.copytree(hf_dir, dst)
    w = load_file(dst / "model.safetensors")
    w["lm_head.weight"] = w["model.embed_tokens.weight"].clone()
    if perturb:
        w["lm_head.weight"][0, 0] += 1
    save_file(w, dst / "model.safetensors", metadata={"format": "pt"})
    return dst


def test_import_refuses_unequal_tied_lm_head(tiny_tied_dir, tmp_path, capsys):
    from nemo_terminal.cli import main

    hf = _with_lm_head(tiny_tied_dir, tmp_path / "hf", perturb=True)
    assert main(["import", "--hf-dir", str(hf), "--out", str(tmp_path / "m")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1
    assert "lm_head.weight differs from model.embed_tokens.weight" in err and not (tmp_path / "m").exists()


def _import_both(tied_hf: str, tied_out: str, untied_hf: str, untied_out: str) -> None:
    from nemo_terminal.convert.importer import import_hf

    import_hf(tied_hf, tied_out, dtype="fp32", show_progress=False)
    import_hf(untied_hf, untied_out, dtype="fp32", show_progress=False)


def test_tied_lm_head_import_and_export_refusing_an_unmapped_tensor(tiny_tied_dir, tmp_path):
    from safetensors.torch import load_file

    from nemo_terminal.convert.exporter import export_hf
    from nemo_terminal.models.tiny import write_tiny_model

    tied_hf = _with_lm_head(tiny_tied_dir, tmp_path / "tied_hf", perturb=False)
    untied_hf = tmp_path / "untied_hf"
    write_tiny_model(untied_hf, seed=1, force=True, num_layers=2, hidden_size=64, num_heads=4, num_kv_heads=2,
                     head_dim=16, ffn_size=96, tie_embeddings=False)
    run_distributed(_import_both, world_size=1, tied_hf=str(tied_hf), tied_out=str(tmp_path / "tied"),
                    untied_hf=str(untied_hf), untied_out=str(tmp_path / "untied"))

    # Tied with an equal stored lm_head: imported; the export is the model without the redundant copy.
    export_hf(tmp_path / "tied", tmp_path / "tied_out", show_progress=False)
    src = load_file(tied_hf / "model.safetensors")
    out = {k: v for f in (tmp_path / "tied_out").glob("*.safetensors") for k, v in load_file(f).items()}
    assert set(out) == set(src) - {"lm_head.weight"}
    assert all(torch.equal(out[k], src[k]) for k in out)

    # An untied checkpoint whose model_config.json claims tied: output_layer.weight has no row.
    cfg_path = tmp_path / "untied" / "model_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["tie_word_embeddings"] = True
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(UserError, match=r"has model tensors no mapping row covers \['output_layer.weight'\]"):
        export_hf(tmp_path / "untied", tmp_path / "untied_out", show_progress=False)
    assert not (tmp_path / "untied_out").exists()
