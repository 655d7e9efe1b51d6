"""Qwen3 config.json every way it is written: the transformers-5 form (`rope_parameters`, `dtype`,
as transformers 5 itself saves it), YaRN inside it, refused fields, and the exported config.json
(4.51 form) that transformers reads back to the same logits.

Tolerance: Megatron vs transformers fp32 logits ≤ 1e-4 (measured ~1e-6); the exported model is
compared to its source bit for bit (same weights, same rope in both config forms).
"""

from __future__ import annotations

import json

import pytest
import torch

from nemo_terminal.cli import main
from nemo_terminal.errors import UserError
from nemo_terminal.models.qwen3 import Qwen3Config
from nemo_terminal.models.tiny import write_tiny_model

ATOL = 1e-4
SHAPE = dict(num_layers=2, hidden_size=64, num_heads=4, num_kv_heads=2, head_dim=16, ffn_size=96,
             tie_embeddings=False)


def _saved_by_transformers5(tmp_path, rope_parameters: dict, max_position: int = 40960):
    """A tiny Qwen3 re-saved by transformers 5's own save_pretrained with `rope_parameters`."""
    from transformers import AutoModelForCausalLM

    from nemo_terminal.models.tokenizer import write_qwen3_tokenizer

    src = write_tiny_model(tmp_path / "tiny", seed=5, **SHAPE)
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    model.config.rope_parameters = dict(rope_parameters)
    model.config.max_position_embeddings = max_position
    out = tmp_path / "hf5"
    model.save_pretrained(out)
    write_qwen3_tokenizer(out)
    cfg = json.loads((out / "config.json").read_text())
    assert "rope_parameters" in cfg and "rope_theta" not in cfg and "rope_scaling" not in cfg, cfg
    assert cfg["rope_parameters"]["rope_theta"] == rope_parameters["rope_theta"]
    return out


def _verify(capsys, hf, meg) -> float:
    assert main(["verify", "--hf-dir", str(hf), "--megatron-dir", str(meg), "--atol", str(ATOL)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    return float(out[-1].split("=")[1])


def _logits(hf_dir) -> list[torch.Tensor]:
    from nemo_terminal.convert.verify import hf_logits, prompt_ids

    return hf_logits(hf_dir, prompt_ids(hf_dir))


def test_rope_parameters_theta_imports_verifies_and_exports_in_451_form(tmp_path, capsys):
    hf = _saved_by_transformers5(tmp_path, {"rope_type": "default", "rope_theta": 5_000_000.0})
    meg, out = tmp_path / "meg", tmp_path / "out"
    assert main(["import", "--hf-dir", str(hf), "--out", str(meg), "--dtype", "fp32"]) == 0
    assert Qwen3Config.from_json_file(meg / "model_config.json").rope_theta == 5_000_000.0
    assert _verify(capsys, hf, meg) <= ATOL
    # Export at another dtype than the source's `dtype`: one dtype key, one rope description.
    assert main(["export", "--megatron-dir", str(meg), "--out", str(out), "--dtype", "bf16"]) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["rope_theta"] == 5_000_000.0 and "rope_parameters" not in cfg and "rope_scaling" not in cfg
    assert cfg["torch_dtype"] == "bfloat16" and "dtype" not in cfg
    # transformers 5 reads the 4.51 form to the same model: an fp32 export gives identical logits.
    assert main(["export", "--megatron-dir", str(meg), "--out", str(out), "--dtype", "fp32", "--force"]) == 0
    for a, b in zip(_logits(hf), _logits(out), strict=True):
        assert torch.equal(a, b)


def test_yarn_in_rope_parameters_imports_and_verifies(tmp_path, capsys):
    # A short original context, so the verify prompts reach into the interpolated frequencies.
    yarn = {"rope_type": "yarn", "rope_theta": 1_000_000.0, "factor": 4.0, "original_max_position_embeddings": 64}
    hf = _saved_by_transformers5(tmp_path, yarn, max_position=256)
    meg = tmp_path / "meg"
    assert main(["import", "--hf-dir", str(hf), "--out", str(meg), "--dtype", "fp32"]) == 0
    scaling = Qwen3Config.from_json_file(meg / "model_config.json").rope_scaling
    assert scaling == {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64}
    assert _verify(capsys, hf, meg) <= ATOL


BASE = dict(model_type="qwen3", architectures=["Qwen3ForCausalLM"], num_hidden_layers=2, hidden_size=64,
            num_attention_heads=4, num_key_value_heads=2, head_dim=16, intermediate_size=96)


@pytest.mark.parametrize("field,value", [
    ("attention_bias", True),
    ("use_sliding_window", True),
    ("layer_types", ["full_attention", "sliding_attention"]),
    ("hidden_act", "gelu"),
    ("attention_dropout", 0.1),
    ("rope_scaling", {"rope_type": "linear", "factor": 2.0}),
    ("rope_parameters", {"rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0}),
    ("rope_parameters", {"rope_type": "yarn", "rope_theta": 1e6, "factor": 4.0, "attention_factor": 2.0}),
])
def test_refused_field_names_it(field, value):
    with pytest.raises(UserError) as err:
        Qwen3Config.from_hf_dict({**BASE, field: value}, source="m/config.json")
    msg = str(err.value)
    assert "m/config.json" in msg and field in msg and "\n" not in msg


def test_contradicting_forms_are_refused():
    both = {**BASE, "rope_theta": 1e6, "rope_parameters": {"rope_type": "default", "rope_theta": 5e6}}
    with pytest.raises(UserError, match="rope_theta=1000000.0 and rope_parameters.rope_theta=5000000.0"):
        Qwen3Config.from_hf_dict(both)
    with pytest.raises(UserError, match="torch_dtype='bfloat16' and dtype='float32'"):
        Qwen3Config.from_hf_dict({**BASE, "torch_dtype": "bfloat16", "dtype": "float32"})


def test_ignored_fields_accepted_and_unknown_warned_and_kept(caplog):
    cfg = Qwen3Config.from_hf_dict({**BASE, "use_sliding_window": False, "sliding_window": 4096,
                                    "max_window_layers": 28, "attention_dropout": 0, "use_cache": True,
                                    "layer_types": ["full_attention"] * 2, "some_new_field": 7,
                                    "dtype": "bfloat16"})
    assert [r for r in caplog.records if "some_new_field" in r.getMessage()]
    assert not [r for r in caplog.records if "sliding_window" in r.getMessage()]
    out = cfg.to_hf_dict()
    assert out["some_new_field"] == 7 and out["torch_dtype"] == "bfloat16" and "dtype" not in out
    assert out["use_sliding_window"] is False and out["hidden_act"] == "silu"
    assert Qwen3Config.from_hf_dict(out).to_hf_dict() == out  # a fixed point: export re-reads identically


def test_refused_at_import_cli(tiny_tied_dir, tmp_path, capsys):
    import shutil

    hf = tmp_path / "hf"
    shutil.copytree(tiny_tied_dir, hf)
    cfg = json.loads((hf / "config.json").read_text())
    (hf / "config.json").write_text(json.dumps({**cfg, "use_sliding_window": True}))
    assert main(["import", "--hf-dir", str(hf), "--out", str(tmp_path / "m")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "use_sliding_window" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "m").exists()


def test_published_style_tied_checkpoint_imports_and_verifies(tiny_tied_dir, tmp_path, capsys):
    """Qwen3-0.6B/1.7B as published: tie_word_embeddings true *and* a stored lm_head.weight (equal to
    the embedding), with a transformers-5 config (`dtype`, `rope_parameters`)."""
    import shutil

    from safetensors.torch import load_file, save_file

    hf = tmp_path / "hf"
    shutil.copytree(tiny_tied_dir, hf)
    weights = load_file(hf / "model.safetensors")
    weights["lm_head.weight"] = weights["model.embed_tokens.weight"].clone()
    save_file(weights, hf / "model.safetensors", metadata={"format": "pt"})
    cfg = json.loads((hf / "config.json").read_text())
    cfg["dtype"] = cfg.pop("torch_dtype")
    cfg["rope_parameters"] = {"rope_type": "default", "rope_theta": cfg.pop("rope_theta")}
    (hf / "config.json").write_text(json.dumps(cfg))
    meg, out = tmp_path / "meg", tmp_path / "out"
    assert main(["import", "--hf-dir", str(hf), "--out", str(meg), "--dtype", "fp32"]) == 0
    assert _verify(capsys, hf, meg) <= ATOL
    assert main(["export", "--megatron-dir", str(meg), "--out", str(out)]) == 0
    for a, b in zip(_logits(hf), _logits(out), strict=True):
        assert torch.equal(a, b)
