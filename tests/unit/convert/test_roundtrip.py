"""HF -> import -> Megatron (TP=1, TP=2, PP=2) logit parity, bit-exact export round trip, and a
TP=2-saved checkpoint exporting to the same tensors. Real megatron-core, real gloo processes.

Tolerance: fp32 logits within 1e-4 of transformers' (measured ~4e-7).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from nemo_terminal.testing import run_distributed

pytestmark = pytest.mark.dist
ATOL = 1e-4


def _hf_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    out = {}
    for f in sorted(os.listdir(path)):
        if f.endswith(".safetensors"):
            out.update(load_file(path / f))
    return out


def import_export_job(hf: str, meg: str, out: str, prompts: list) -> list:
    from nemo_terminal.convert.exporter import export_hf
    from nemo_terminal.convert.importer import import_hf
    from nemo_terminal.convert.verify import megatron_logits

    import_hf(hf, meg, dtype="fp32", show_progress=False)
    export_hf(meg, out, max_shard_bytes=30_000_000, show_progress=False)  # forces several shards
    return megatron_logits(meg, prompts)


def parallel_job(meg: str, prompts: list, save_to: str, export_to: str):
    """Logits at TP=2 and PP=2; the TP=2 model also saves itself (as the trainer would), and every
    rank then exports that checkpoint to its own directory."""
    from megatron.core import dist_checkpointing

    from nemo_terminal.checkpoint import directory as cio
    from nemo_terminal.checkpoint import save_load
    from nemo_terminal.convert.exporter import export_hf
    from nemo_terminal.convert.verify import build_stage, megatron_logits

    rank = torch.distributed.get_rank()
    tp2 = megatron_logits(meg, prompts, tp=2, pp=1)
    cfg = cio.read_model_config(meg)
    model = build_stage(cfg, 2, 1)
    save_load.load_model_weights([model], cio.resolve_checkpoint(meg))
    it = Path(save_to) / cio.iter_name(5)
    it.mkdir(parents=True, exist_ok=True)
    dist_checkpointing.save({"model": model.sharded_state_dict(), "iteration": 5}, str(it))  # extra entry: ignored
    if rank == 0:
        cio.write_model_config(save_to, cfg)
        cio.copy_tokenizer(cio.tokenizer_dir(meg), Path(save_to) / cio.TOKENIZER_DIR)
        cio.write_latest(save_to, it.name)
    torch.distributed.barrier()
    pp2 = megatron_logits(meg, prompts, tp=1, pp=2)
    export_hf(save_to, Path(export_to) / f"rank{rank}", show_progress=False)
    return tp2, pp2


def test_roundtrip_and_parallel_parity(tiny_hf_dir, tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    from nemo_terminal.cli import main
    from nemo_terminal.convert.verify import compare, hf_logits, prompt_ids

    prompts = prompt_ids(tiny_hf_dir)
    reference = hf_logits(tiny_hf_dir, prompts)
    meg, out = tmp_path / "meg", tmp_path / "hf_out"

    (tp1,) = run_distributed(import_export_job, world_size=1, hf=str(tiny_hf_dir), meg=str(meg), out=str(out),
                             prompts=prompts)
    assert compare(reference, tp1).max_abs_diff <= ATOL

    # Round trip: identical key sets, bit-exact tensors, several shards with an index.
    src, dst = _hf_tensors(tiny_hf_dir), _hf_tensors(out)
    assert src.keys() == dst.keys()
    assert all(src[k].dtype == dst[k].dtype and torch.equal(src[k], dst[k]) for k in src)
    assert (out / "model.safetensors.index.json").is_file() and len(list(out.glob("model-*.safetensors"))) > 1
    exported = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    with torch.no_grad():
        again = [exported(torch.tensor([ids])).logits[0] for ids in prompts]
    assert compare(reference, again).max_abs_diff == 0.0

    (tp2_0, pp2_0), (tp2_1, pp2_1) = run_distributed(
        parallel_job, world_size=2, meg=str(meg), prompts=prompts, save_to=str(tmp_path / "meg_tp2"),
        export_to=str(tmp_path / "hf_tp2"))
    assert compare(reference, tp2_0).max_abs_diff <= ATOL and compare(reference, tp2_1).max_abs_diff <= ATOL
    assert pp2_0 is None and compare(reference, pp2_1).max_abs_diff <= ATOL

    # A checkpoint saved by a TP=2 model exports to the same tensors as the TP=1 import.
    for rank in (0, 1):
        from_tp2 = _hf_tensors(tmp_path / "hf_tp2" / f"rank{rank}")
        assert from_tp2.keys() == src.keys() and all(torch.equal(src[k], from_tp2[k]) for k in src)

    # Export refuses an existing target unless --force.
    code = main(["export", "--megatron-dir", str(meg), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 1 and "already exists" in err and str(out) in err
