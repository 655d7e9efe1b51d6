"""YaRN rope scaling (the 64K recipe) gives the same logits in megatron-core as in transformers."""

from __future__ import annotations

import json
import subprocess
import sys

from nemo_terminal.models.tiny import write_tiny_model


def _nt(*args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "nemo_terminal", *args], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-4000:]
    return out.stdout


def test_yarn_logits_match_transformers(tmp_path):
    hf = write_tiny_model(tmp_path / "hf", num_layers=2, hidden_size=64, num_heads=4, num_kv_heads=2,
                          head_dim=16, ffn_size=96, tie_embeddings=False, seed=3)
    cfg_file = hf / "config.json"
    cfg = json.loads(cfg_file.read_text())
    # A short original context, so the 3 verify prompts reach into the interpolated frequencies.
    cfg["rope_scaling"] = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64}
    cfg["max_position_embeddings"] = 256
    cfg_file.write_text(json.dumps(cfg))
    _nt("import", "--hf-dir", str(hf), "--out", str(tmp_path / "meg"), "--dtype", "fp32")
    last = _nt("verify", "--hf-dir", str(hf), "--megatron-dir", str(tmp_path / "meg"), "--atol", "1e-4")
    diff = float(last.strip().splitlines()[-1].split("=")[1])
    assert diff <= 1e-4
