"""tiny-model writes a Qwen3 that transformers loads, and its CLI errors are one clear line."""

from __future__ import annotations

import json

import pytest
import torch

from nemo_terminal.cli import main


def test_loads_in_transformers_and_runs(tiny_hf_dir):
    from transformers import AutoModelForCausalLM

    cfg = json.loads((tiny_hf_dir / "config.json").read_text())
    model = AutoModelForCausalLM.from_pretrained(tiny_hf_dir, dtype=torch.float32)
    assert type(model).__name__ == "Qwen3ForCausalLM"
    assert model.config.vocab_size == 151936 and model.config.head_dim == cfg["head_dim"]
    ids = torch.tensor([[151644, 872, 198, 6023, 151645]])
    logits = model(ids).logits
    assert logits.shape == (1, 5, 151936) and torch.isfinite(logits).all()
    if cfg["tie_word_embeddings"]:
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    # Norms are 1 + noise, so a dropped norm would change the output.
    assert 0.05 < model.model.norm.weight.std().item() < 0.2


def test_deterministic_in_seed(tmp_path):
    from safetensors.torch import load_file

    from nemo_terminal.models.tiny import write_tiny_model

    a = load_file(write_tiny_model(tmp_path / "a", num_layers=1, seed=3) / "model.safetensors")
    b = load_file(write_tiny_model(tmp_path / "b", num_layers=1, seed=3) / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(
    "case, extra, expect",
    [
        ("heads", ["--num-heads", "4", "--num-kv-heads", "3"], "--num-heads=4 is not divisible by --num-kv-heads=3"),
        ("unwritable", ["--force"], "cannot create --out"),
        ("non-empty", [], "is not empty; pass --force"),
    ],
)
def test_cli_errors(tmp_path, capsys, case, extra, expect):
    out = tmp_path / "out"
    if case == "unwritable":
        blocker = tmp_path / "a_file"  # a path below a regular file cannot be created, even by root
        blocker.write_text("x")
        out = blocker / "out"
    else:
        out.mkdir()
        (out / "junk").write_text("x")
    code = main(["tiny-model", "--out", str(out), *extra])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("error: ") and expect in err and len(err.strip().splitlines()) == 1
    if case != "heads":
        assert str(out) in err
