"""The device helper: GPU selection, backend, and the device moves of verify and the trainer run on CPU.

The moves are the same lines a GPU run executes; here they go through a device object that is the
CPU (recording what it moved) or the meta device (so a tensor that skipped the move stays visible).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from nemo_terminal.runtime import device as device_mod
from nemo_terminal.runtime.device import CPU, Device, local_device_index
from nemo_terminal.testing import run_distributed

MOVED: list[str] = []


class RecordingDevice(Device):
    """The CPU, noting the type of everything moved onto it."""

    def move(self, value):
        MOVED.append(type(value).__name__)
        return super().move(value)


def test_gpu_index_wraps_when_each_task_sees_one_gpu():
    assert local_device_index(5, 1) == 0  # srun --gpus-per-task=1: every task sees device 0
    assert local_device_index(5, 4) == 1
    assert [local_device_index(r, 8) for r in range(8)] == list(range(8))
    with pytest.raises(ValueError, match="no CUDA device"):
        local_device_index(0, 0)


def test_backend_and_pinning_follow_the_device():
    assert (CPU.backend, CPU.pin_memory, CPU.peak_bf16_flops()) == ("gloo", False, None)
    gpu = Device(torch.device("cuda", 3))  # a description only: nothing is allocated on it
    assert (gpu.backend, gpu.pin_memory, gpu.is_accelerator) == ("nccl", True, True)


def test_move_reaches_every_tensor_of_a_batch():
    meta = Device(torch.device("meta"))
    batch = {"tokens": torch.ones(1, 4), "nested": [torch.zeros(2), (torch.ones(1), 7)], "num_tokens": 4}
    moved = meta.move(batch)
    assert moved["tokens"].is_meta and moved["nested"][0].is_meta and moved["nested"][1][0].is_meta
    assert moved["num_tokens"] == 4 and moved["nested"][1][1] == 7
    assert meta.move(torch.nn.Linear(2, 2)).weight.is_meta


def test_trainer_batch_move_uses_the_current_device(monkeypatch):
    from nemo_terminal.training import trainer

    monkeypatch.setattr(device_mod, "_current", Device(torch.device("meta")))
    batch = {"tokens": torch.ones(1, 4, dtype=torch.long), "cu_seqlens": torch.tensor([0, 4]), "max_seqlen": 4}
    moved = trainer._to_device(batch)
    assert moved["tokens"].is_meta and moved["cu_seqlens"].is_meta and moved["max_seqlen"] == 4


def _verify_through_recording_device(hf_dir: str, meg_dir: str) -> tuple[list[str], float]:
    from nemo_terminal.checkpoint import directory as cio
    from nemo_terminal.convert.importer import import_hf
    from nemo_terminal.convert.verify import compare, hf_logits, megatron_logits, prompt_ids

    import_hf(hf_dir, meg_dir, dtype="fp32", show_progress=False)
    assert device_mod.current_device() == CPU  # what init_distributed selected on this machine
    device_mod._current = RecordingDevice(**{f.name: getattr(CPU, f.name) for f in dataclasses.fields(CPU)})
    prompts = prompt_ids(cio.tokenizer_dir(meg_dir))
    meg = megatron_logits(meg_dir, prompts)
    ref = hf_logits(hf_dir, prompts)
    return list(MOVED), compare(ref, meg).max_abs_diff


def test_verify_moves_both_models_and_every_prompt(tiny_tied_dir, tmp_path):
    (moved, diff), = run_distributed(_verify_through_recording_device, world_size=1, hf_dir=str(tiny_tied_dir),
                                     meg_dir=str(tmp_path / "meg"))
    assert "GPTModel" in moved and "Qwen3ForCausalLM" in moved
    assert moved.count("Tensor") == 2 * 3  # each of the 3 prompts, once per model
    assert diff < 1e-4  # fp32 on both sides (measured ~4e-7 in test_roundtrip)
