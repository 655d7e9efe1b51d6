"""The memory planner: hand-computed components for one case, and the CLI's refusal of bad layouts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nemo_terminal.cli import main
from nemo_terminal.models.qwen3 import qwen3_size
from nemo_terminal.training.planner import GIB, PlanInput, activation_bytes_per_layer, estimate
from nemo_terminal.runtime.parallel import ParallelConfig

CONFIGS = Path(__file__).resolve().parents[3] / "configs"


def _plan_8b(recompute: str = "none"):
    return estimate(PlanInput(model=qwen3_size("8b"), parallel=ParallelConfig(tp=4, cp=2, sequence_parallel=True),
                              seq_length=32768, num_gpus=32, recompute=recompute))


def test_components_match_a_hand_calculation():
    """Qwen3-8B, TP4 CP2 SP, 32 GPUs (dp 4), s=32768, b=1, bf16, no recompute; numbers by hand."""
    # Per TP rank and layer: (q,k,v 4096*128*48 + o 32*128*4096 + MLP 3*4096*12288) / 4 + norms 2*4096 + 2*128
    layer = (25_165_824 + 16_777_216 + 150_994_944) // 4 + 8_448
    params = 36 * layer + 2 * (151_936 * 4096 // 4) + 4096  # + embedding and output shards + final norm
    assert params == 2_047_915_008
    c = _plan_8b().components
    assert c["weights"] == 2 * params
    assert c["grads (fp32 buffer)"] == 4 * params
    assert c["optimizer (dist, fp32)"] == 12 * params / 8  # sharded over dp 4 x cp 2
    # Per token and layer: seq part 8*4096 / tp 4 = 8192; tp part (12288 + 10240 + 8192 + 6*12288) / 4 = 26112
    assert c["activations"] == 36 * 16_384 * (8_192 + 26_112)  # 16384 tokens per CP rank
    assert c["logits + cross-entropy"] == 16_384 * 37_984 * 6 + 16_384 * 4 * 4096 / 4
    assert c["workspace allowance"] == 6 * GIB


def test_qwen3_8b_recount_is_close_to_korthikanti_34():
    """The docstring's claim: our per-token recount for 8B is 33.5·h (Korthikanti's GPT constant: 34)."""
    one_rank = activation_bytes_per_layer(qwen3_size("8b"), ParallelConfig(), seq_length=1, micro_batch=1)
    assert one_rank / 4096 == 33.5


def test_recompute_and_unfused_attention_move_activations_the_right_way():
    none, full = _plan_8b("none").components["activations"], _plan_8b("full").components["activations"]
    assert full == 36 * 16_384 * 2 * 4096 / 4 + none / 36  # layer inputs + one layer being recomputed
    p, m = ParallelConfig(tp=4, cp=2, sequence_parallel=True), qwen3_size("8b")
    unfused = activation_bytes_per_layer(m, p, 32768, 1, fused_attention=False)
    assert unfused - activation_bytes_per_layer(m, p, 32768, 1) == 5 * 32 * 16_384 * 32_768 / 4


def test_pipeline_first_stage_holds_pp_micro_batches():
    m = qwen3_size("32b")
    pp2 = estimate(PlanInput(model=m, parallel=ParallelConfig(tp=8, pp=2, cp=2, sequence_parallel=True),
                             seq_length=32768, num_gpus=128))
    assert pp2.stage == "first" and pp2.in_flight == 2
    per_layer = activation_bytes_per_layer(m, ParallelConfig(tp=8, cp=2, sequence_parallel=True), 32768, 1)
    assert pp2.components["activations"] == 32 * 2 * per_layer


def test_cli_refuses_a_layout_that_cannot_fit(capsys):
    bad = ["plan", "--config", str(CONFIGS / "qwen3_32b_terminal_sft_32k.yaml"), "--num-gpus", "8",
           "parallel.tp=1", "parallel.pp=1", "parallel.cp=1", "parallel.sequence_parallel=false"]
    assert main(bad) == 1
    out = capsys.readouterr()
    assert "DOES NOT FIT" in out.out and "exceeds 80 GiB" in out.err
    assert main(bad + ["--warn-only"]) == 0
    assert "warning:" in capsys.readouterr().out


def test_cli_reads_model_and_seq_length_from_the_run_inputs(tmp_path, capsys):
    """A recipe without a size in its name: model_config.json and the data manifest supply them."""
    meg, data = tmp_path / "meg", tmp_path / "data"
    meg.mkdir()
    data.mkdir()
    (meg / "model_config.json").write_text(json.dumps(qwen3_size("0.6b").to_hf_dict()))
    (data / "manifest.json").write_text(json.dumps({"seq_length": 4096}))
    argv = ["plan", "--config", str(CONFIGS / "tiny_cpu.yaml"), f"model.megatron_dir={meg}", f"data.path={data}"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "28 layers, hidden 1024" in out and "seq_length 4096 (from the prepared data" in out


def test_cli_asks_for_what_it_cannot_infer(capsys):
    assert main(["plan", "--config", str(CONFIGS / "tiny_cpu.yaml")]) == 1
    assert "--model-size" in capsys.readouterr().err
    argv = ["plan", "--config", str(CONFIGS / "tiny_cpu.yaml"), "--model-size", "0.6b"]
    assert main(argv) == 1
    assert "--seq-length" in capsys.readouterr().err
    assert main(argv + ["--seq-length", "2048"]) == 0


def test_unknown_size_is_a_user_error():
    from nemo_terminal.errors import UserError

    with pytest.raises(UserError, match="known: 0.6b"):
        qwen3_size("70b")
