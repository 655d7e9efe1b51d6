"""The memory planner: hand-computed components for one case, and the CLI's refusal of bad layouts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nemo_terminal.cli import main
from nemo_terminal.models.qwen3 import qwen3_size
from nemo_terminal.runtime.parallel import ParallelConfig
from nemo_terminal.training.planner import GIB, Kernels, PlanInput, activation_bytes_per_layer, estimate

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
    # Per token and layer (bf16, e = 2): seq part (4*2*4096 norm/linear inputs + 2*4 fp32 rsigma) / tp 4 = 8194;
    # tp part / 4: qkv out 2*48*128 = 12288, q/k rsigma 4*40 = 160, q/k after RoPE 2*40*128 = 10240,
    # attention out 2*32*128 = 8192 + fp32 softmax stats 4*32 = 128, q copy (2 KV groups of 4 heads
    # per rank) 8192, fused SwiGLU 3*2*12288 = 73728: 112928 / 4 = 28232; unfused RoPE cos/sin 4*2*128 = 1024
    assert c["activations"] == 36 * 16_384 * (8_194 + 28_232 + 1_024)  # 16384 tokens per CP rank
    assert c["logits + cross-entropy"] == 16_384 * 37_984 * 6 + 16_384 * 4 * 4096 / 4
    assert c["workspace allowance"] == 6 * GIB


def test_qwen3_8b_recount_is_close_to_korthikanti_34():
    """The docstring's claim: 35.8·h bytes per token for 8B at TP1 (Korthikanti's GPT constant: 34),
    47.8·h with the unfused SwiGLU."""
    m, p = qwen3_size("8b"), ParallelConfig()
    fused = activation_bytes_per_layer(m, p, seq_length=1, micro_batch=1)
    unfused = activation_bytes_per_layer(m, p, seq_length=1, micro_batch=1, kernels=Kernels(swiglu_fusion=False))
    assert (round(fused / 4096, 1), round(unfused / 4096, 1)) == (35.8, 47.8)
    assert unfused - fused == 2 * 2 * 12288  # the SiLU output and the linear half's copy, bf16


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
    assert "DOES NOT FIT" in out.out and "(79.6 GiB less 5% headroom)" in out.err
    assert main(bad + ["--warn-only"]) == 0
    assert "warning:" in capsys.readouterr().out


def test_cli_gpu_choice_and_headroom(capsys):
    """8B at TP2 CP2 SP, 32K: ~88 GiB. Too big for an H100's 79.6 GiB, fits an H200's 139.8;
    a headroom that leaves less than the plan refuses it again."""
    argv = ["plan", "--config", str(CONFIGS / "qwen3_8b_terminal_sft_32k.yaml"), "--num-gpus", "8",
            "parallel.tp=2", "parallel.cp=2"]
    assert main(argv) == 1
    total = float(next(line.split()[1] for line in capsys.readouterr().out.splitlines() if line.startswith("total")))
    assert 79.6 * 0.95 < total < 139.8 * 0.95
    assert main(argv + ["--gpu", "h200"]) == 0
    assert "139.80" in capsys.readouterr().out
    assert main(argv + ["--gpu", "h200", "--headroom", f"{1 - total / 139.8 + 0.01:.3f}"]) == 1
    assert main(argv + ["--gpu-gib", str(total + 1), "--headroom", "0"]) == 0


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
