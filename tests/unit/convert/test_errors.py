"""Clear one-line UserErrors from the import/export/verify CLIs, naming the key or field."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from nemo_terminal.cli import main


@pytest.fixture
def hf_copy(tiny_tied_dir, tmp_path):
    dst = tmp_path / "hf"
    shutil.copytree(tiny_tied_dir, dst)
    return dst


def _run(capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 1 and err.startswith("error: ") and len(err.splitlines()) == 1, err
    return err


def _rewrite(hf, fn):
    from safetensors.torch import load_file, save_file

    w = load_file(hf / "model.safetensors")
    fn(w)
    save_file(w, hf / "model.safetensors")


def test_qwen2_config(hf_copy, tmp_path, capsys):
    cfg = json.loads((hf_copy / "config.json").read_text())
    cfg.update(model_type="qwen2", architectures=["Qwen2ForCausalLM"])
    (hf_copy / "config.json").write_text(json.dumps(cfg))
    err = _run(capsys, ["import", "--hf-dir", str(hf_copy), "--out", str(tmp_path / "m")])
    assert "config.json" in err and "model_type='qwen2'" in err
    cfg.update(model_type="qwen3", architectures=["Qwen3ForCausalLM"], attention_bias=True)
    (hf_copy / "config.json").write_text(json.dumps(cfg))
    assert "attention_bias" in _run(capsys, ["import", "--hf-dir", str(hf_copy), "--out", str(tmp_path / "m")])


def test_missing_extra_and_wrong_shape(hf_copy, tmp_path, capsys):
    argv = ["import", "--hf-dir", str(hf_copy), "--out", str(tmp_path / "m")]
    _rewrite(hf_copy, lambda w: w.pop("model.layers.1.self_attn.k_norm.weight"))
    assert "lacks HF tensors [model.layers.1.self_attn.k_norm.weight]" in _run(capsys, argv)
    _rewrite(hf_copy, lambda w: w.update({"model.layers.1.self_attn.k_norm.weight": torch.ones(32),
                                         "model.layers.0.self_attn.q_proj.bias": torch.zeros(128)}))
    assert "no mapping covers [model.layers.0.self_attn.q_proj.bias]" in _run(capsys, argv)
    _rewrite(hf_copy, lambda w: (w.pop("model.layers.0.self_attn.q_proj.bias"),
                                 w.update({"model.norm.weight": torch.ones(65)})))
    err = _run(capsys, argv)
    assert "model.norm.weight has shape [65]" in err and "[64]" in err


def test_truncated_safetensors(hf_copy, tmp_path, capsys):
    path = hf_copy / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    err = _run(capsys, ["import", "--hf-dir", str(hf_copy), "--out", str(tmp_path / "m")])
    assert "model.safetensors" in err and "truncated" in err


def test_export_and_verify_errors(tmp_path, capsys):
    meg = tmp_path / "meg"
    meg.mkdir()
    err = _run(capsys, ["export", "--megatron-dir", str(meg), "--out", str(tmp_path / "o")])
    assert "model_config.json" in err
    from nemo_terminal.checkpoint.directory import resolve_checkpoint  # noqa: F401
    from nemo_terminal.models.tiny import tiny_config

    cfg = tiny_config(num_layers=2, hidden_size=64, num_heads=4, num_kv_heads=2, head_dim=32, ffn_size=128,
                      tie_embeddings=True)
    (meg / "model_config.json").write_text(json.dumps(cfg.to_hf_dict()))
    assert "no 'latest' file" in _run(capsys, ["export", "--megatron-dir", str(meg), "--out", str(tmp_path / "o")])
    err = _run(capsys, ["verify", "--hf-dir", str(tmp_path), "--megatron-dir", str(meg), "--tp", "4"])
    assert "tp=4 does not divide the 2 KV groups" in err
