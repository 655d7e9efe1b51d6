"""verify at pp=2 on a 3-layer model (layers 2 + 1): megatron-core's uneven first/last pipeline stages
give the same logits as transformers. fp32; tolerance 1e-4 (measured ~1e-6)."""

from __future__ import annotations

import pytest

from nemo_terminal.testing import run_distributed

pytestmark = pytest.mark.dist
ATOL = 1e-4


def uneven_job(meg: str, prompts: list) -> list:
    from nemo_terminal.convert.verify import megatron_logits

    return megatron_logits(meg, prompts, tp=1, pp=2, last_stage_layers=1)


def test_verify_pp2_on_three_layers(tmp_path, capsys):
    from nemo_terminal.cli import main
    from nemo_terminal.convert.verify import compare, hf_logits, prompt_ids
    from nemo_terminal.models.tiny import write_tiny_model

    hf = write_tiny_model(tmp_path / "hf", num_layers=3, hidden_size=64, num_heads=4, num_kv_heads=2, head_dim=16,
                          ffn_size=96, tie_embeddings=False, seed=7)
    meg = tmp_path / "meg"
    assert main(["import", "--hf-dir", str(hf), "--out", str(meg), "--dtype", "fp32"]) == 0
    # Without a split, the layout check names the one that works.
    assert main(["verify", "--hf-dir", str(hf), "--megatron-dir", str(meg), "--pp", "2"]) == 1
    assert "set parallel.last_stage_layers=1" in capsys.readouterr().err
    prompts = prompt_ids(hf)
    first, last = run_distributed(uneven_job, world_size=2, meg=str(meg), prompts=prompts)
    assert first is None
    assert compare(hf_logits(hf, prompts), last).max_abs_diff <= ATOL
