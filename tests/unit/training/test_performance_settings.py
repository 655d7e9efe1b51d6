"""Bridge's speed settings: which ones a run gets (by device, backend, YaRN, layout), that the trainer
passes them to megatron-core's TransformerConfig / DDP config, and that the ones CPU can run leave
the numbers unchanged: overlapped gradient reduce and parameter gather at DP 2 (and the saved
weights), padded-only cu_seqlens at CP 1 (loss 1e-6 relative: the same sums in the same order up
to bucketing; weights 1e-6)."""

from __future__ import annotations

import torch
from _runs import RECIPE, base_overrides

from nemo_terminal.testing import run_distributed
from nemo_terminal.training.config import TrainConfig
from nemo_terminal.training.performance import resolve


def test_gpu_with_te_gets_everything():
    perf = resolve(TrainConfig(), accelerator=True, backend="te", yarn=False, cp=1, dp_cp=8)
    assert perf.transformer == {"use_cpu_initialization": False, "gradient_accumulation_fusion": True,
                                "apply_rope_fusion": True}
    assert perf.ddp == {"overlap_grad_reduce": True, "overlap_param_gather": True}
    assert perf.padded_only_cu_seqlens and perf.dropped == []


def test_each_setting_off_where_unsupported_with_its_reason():
    cpu = resolve(TrainConfig(), accelerator=False, backend="torch", yarn=False, cp=2, dp_cp=1)
    assert cpu.transformer == {"use_cpu_initialization": True, "gradient_accumulation_fusion": False,
                               "apply_rope_fusion": False}
    assert cpu.ddp == {"overlap_grad_reduce": False, "overlap_param_gather": False}  # DP x CP = 1
    assert not cpu.padded_only_cu_seqlens
    assert len(cpu.dropped) == 6 and all(r.startswith("train.") and ": " in r for r in cpu.dropped)
    yarn = resolve(TrainConfig(), accelerator=True, backend="te", yarn=True, cp=2, dp_cp=8)
    assert not yarn.transformer["apply_rope_fusion"] and yarn.transformer["gradient_accumulation_fusion"]
    assert any("mscale" in r for r in yarn.dropped)


def test_asked_off_stays_off_silently():
    off = TrainConfig(gpu_initialization=False, gradient_accumulation_fusion=False, rope_fusion=False,
                      overlap_grad_reduce=False, overlap_param_gather=False, padded_only_cu_seqlens=False)
    perf = resolve(off, accelerator=True, backend="te", yarn=False, cp=1, dp_cp=8)
    assert perf.transformer["use_cpu_initialization"] and not any(perf.ddp.values())
    assert not perf.padded_only_cu_seqlens and perf.dropped == []


def _settings_and_history(overrides: list[str]) -> dict:
    """Train; return what megatron-core was given and the per-step losses."""
    from nemo_terminal.training.config import load_config
    from nemo_terminal.training.trainer import Trainer

    trainer = Trainer(load_config(RECIPE, overrides)).setup()
    history = trainer.train()
    t, ddp = trainer.tcfg, trainer.model[0].ddp_config
    return {
        "tcfg": {k: getattr(t, k) for k in ("use_cpu_initialization", "gradient_accumulation_fusion",
                                            "apply_rope_fusion", "bias_activation_fusion")},
        "ddp": {k: getattr(ddp, k) for k in ("overlap_grad_reduce", "overlap_param_gather")},
        "grad_sync_func": t.grad_sync_func is not None,
        "padded_only": trainer.perf.padded_only_cu_seqlens,
        "losses": [(r["loss"], r["loss_tokens"]) for r in history],
    }


def _settings_many(runs: dict[str, list[str]]) -> dict[str, dict]:
    return {name: _settings_and_history(overrides) for name, overrides in runs.items()}


def _same_losses(a: list, b: list) -> None:
    assert len(a) == len(b) == 4
    for (la, na), (lb, nb) in zip(a, b, strict=False):
        assert na == nb and abs(la - lb) <= 1e-6 * abs(la), (a, b)


def test_overlapped_grad_reduce_at_dp2_is_passed_and_changes_nothing(train_inputs, tmp_path):
    runs = {"overlap": base_overrides(train_inputs, tmp_path / "overlap"),
            "plain": base_overrides(train_inputs, tmp_path / "plain", **{"train.overlap_grad_reduce": False})}
    res = run_distributed(_settings_many, world_size=2, timeout=600, runs=runs)[0]
    on, off = res["overlap"], res["plain"]
    assert on["ddp"] == {"overlap_grad_reduce": True, "overlap_param_gather": True}
    assert on["grad_sync_func"] and not off["grad_sync_func"] and not off["ddp"]["overlap_grad_reduce"]
    # CPU: megatron's CPU initialisation, no TE fusions, SwiGLU unfused (its fused kernel compiles per shape)
    assert on["tcfg"] == {"use_cpu_initialization": True, "gradient_accumulation_fusion": False,
                          "apply_rope_fusion": False, "bias_activation_fusion": False}
    _same_losses(on["losses"], off["losses"])


def test_padded_only_cu_seqlens_gives_the_same_loss(train_inputs, tmp_path):
    runs = {"padded_only": base_overrides(train_inputs, tmp_path / "a"),
            "both": base_overrides(train_inputs, tmp_path / "b", **{"train.padded_only_cu_seqlens": False})}
    res = run_distributed(_settings_many, world_size=1, runs=runs)[0]
    assert res["padded_only"]["padded_only"] and not res["both"]["padded_only"]
    _same_losses(res["padded_only"]["losses"], res["both"]["losses"])


def test_padded_only_data_has_padding(train_inputs):
    """The data the padded-only test trains on has padded spans (else that test could not fail)."""
    import numpy as np

    from nemo_terminal.data.store import PackedDataset

    ds = PackedDataset(train_inputs["data"])
    bins = [ds.bin(i) for i in range(len(ds))]
    assert any(int(np.sum(b.doc_lens)) < ds.seq_length for b in bins)  # unused tails join the last document


def _saved_model_weights(run_dir: str) -> dict:
    """Every model tensor (not optimizer state) of the run's latest checkpoint, read from disk."""
    from pathlib import Path

    from nemo_terminal.checkpoint.dcp_reader import CheckpointReader
    from nemo_terminal.checkpoint.save_load import latest_checkpoint

    reader = CheckpointReader(latest_checkpoint(Path(run_dir)))
    return {k: reader.read(k) for k in reader.tensors if not k.startswith("optimizer") and "_extra_state" not in k}


def test_overlapped_param_gather_saves_the_updated_weights(train_inputs, tmp_path):
    """Parameters updated by another DP rank arrive lazily (in the next forward); a checkpoint written
    right after a step must still hold them: the trainer gathers before it saves. Same losses too."""
    save = {"checkpoint.save_final": True, "checkpoint.save_interval": 2}  # a save mid-run, then more steps
    runs = {"gather": base_overrides(train_inputs, tmp_path / "gather", **save),
            "plain": base_overrides(train_inputs, tmp_path / "plain", **save, **{"train.overlap_param_gather": False})}
    res = run_distributed(_settings_many, world_size=2, timeout=600, runs=runs)[0]
    assert res["gather"]["ddp"]["overlap_param_gather"] and not res["plain"]["ddp"]["overlap_param_gather"]
    _same_losses(res["gather"]["losses"], res["plain"]["losses"])
    a, b = _saved_model_weights(str(tmp_path / "gather")), _saved_model_weights(str(tmp_path / "plain"))
    assert a.keys() == b.keys() and len(a) > 5
    for key in a:
        assert torch.allclose(a[key], b[key], rtol=1e-6, atol=1e-7), key
