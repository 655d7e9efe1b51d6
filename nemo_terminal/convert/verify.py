"""Logit parity between an HF model and a Megatron checkpoint, at any TP/PP.

The Megatron side runs through megatron-core's own forward_backward_func
(forward only), so the pipeline schedule and TP vocab gather are the ones
training uses. Every prompt is a fixed chat rendered with the checkpoint's
own chat template.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from megatron.core import parallel_state, tensor_parallel
from megatron.core.pipeline_parallel import get_forward_backward_func
from transformers import AutoModelForCausalLM

from nemo_terminal.checkpoint.save_load import load_model_weights
from nemo_terminal.checkpoint.source import open_checkpoint
from nemo_terminal.errors import UserError
from nemo_terminal.models.provider import build_gpt_model, to_transformer_config
from nemo_terminal.models.tokenizer import load_tokenizer
from nemo_terminal.runtime.device import current_device
from nemo_terminal.runtime.distributed import init_parallel_state
from nemo_terminal.runtime.parallel import ParallelConfig

log = logging.getLogger(__name__)

PROMPTS: tuple[tuple[dict, ...], ...] = (
    ({"role": "user", "content": "List the files in /app, including hidden ones."},),
    (
        {"role": "user",
         "content": "Task Description:\nCount lines in data.csv\n\nCurrent Terminal Screen:\nroot@a1:/app#"},
        {"role": "assistant", "content": '<think>\nUse wc.\n</think>\n\n{"analysis": "", "plan": "wc -l", '
                                         '"commands": [{"keystrokes": "wc -l data.csv\\n", "duration": 0.1}]}'},
        {"role": "user", "content": "New Terminal Output:\n42 data.csv\nroot@a1:/app#"},
    ),
    ({"role": "user", "content": "数一数 ünïcödé 🤖 and 3.14159 + 2**10 = ?"},),
)


def prompt_ids(tokenizer_path: str | Path) -> list[list[int]]:
    tok = load_tokenizer(tokenizer_path)
    return [list(tok.apply_chat_template(list(p), tokenize=True, add_generation_prompt=True, return_dict=False))
            for p in PROMPTS]


def hf_logits(hf_dir: str | Path, prompts: Sequence[Sequence[int]]) -> list[torch.Tensor]:
    """fp32 logits [seq, vocab] of each prompt from transformers (remote code never trusted), on the CPU;
    the model runs on this process's device."""
    model = AutoModelForCausalLM.from_pretrained(str(hf_dir), dtype=torch.float32, trust_remote_code=False,
                                                 local_files_only=True)
    device = current_device()
    model = device.move(model.eval())
    with torch.no_grad():
        return [model(device.move(torch.tensor([ids]))).logits[0].float().cpu() for ids in prompts]


def build_stage(cfg, tp: int, pp: int, first_stage_layers: int | None = None,
                last_stage_layers: int | None = None):
    """This rank's pipeline stage of the model at TP/PP, evenly split unless first/last_stage_layers
    are given (parallel state must already be set)."""
    model = build_gpt_model(
        cfg, to_transformer_config(cfg, tp=tp, pp=pp, first_stage_layers=first_stage_layers,
                                   last_stage_layers=last_stage_layers), attention_backend="local",
        pre_process=parallel_state.is_pipeline_first_stage(), post_process=parallel_state.is_pipeline_last_stage(),
    )
    return model.eval()


def megatron_logits(meg_dir: str | Path, prompts: Sequence[Sequence[int]], tp: int = 1, pp: int = 1,
                    first_stage_layers: int | None = None,
                    last_stage_layers: int | None = None) -> list[torch.Tensor] | None:
    """Full-vocab fp32 logits [seq, vocab] per prompt (on the CPU) on the last pipeline stage; None elsewhere.

    Collective: every rank of a world of tp*pp*dp processes calls it.
    """
    source = open_checkpoint(meg_dir)  # ours, Megatron-LM's or Bridge's layout
    cfg = source.cfg
    parallel = ParallelConfig(tp=tp, pp=pp, first_stage_layers=first_stage_layers,
                              last_stage_layers=last_stage_layers)
    parallel.check_model(cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_key_value_heads)
    init_parallel_state(parallel)
    model = build_stage(cfg, tp, pp, first_stage_layers, last_stage_layers)
    load_model_weights([model], source.iter_dir)
    device = current_device()
    model = device.move(model)
    forward_backward = get_forward_backward_func()

    def forward_step(data_iterator, model):
        ids = next(data_iterator)
        pos = torch.arange(ids.shape[1], device=ids.device).unsqueeze(0)
        out = model(ids, pos, None)

        def collect(output, non_loss_data=False):
            return tensor_parallel.gather_from_tensor_model_parallel_region(output)

        return out, collect

    results = []
    with torch.no_grad():
        for ids in prompts:
            batch = device.move(torch.tensor([list(ids)]))
            got = forward_backward(
                forward_step_func=forward_step, data_iterator=iter([batch]), model=[model], num_microbatches=1,
                seq_length=batch.shape[1], micro_batch_size=1, forward_only=True, collect_non_loss_data=True,
            )
            if parallel_state.is_pipeline_last_stage():
                results.append(got[0][0].float().cpu())
    return results if parallel_state.is_pipeline_last_stage() else None


@dataclass
class Comparison:
    max_abs_diff: float
    top1_agreement: float
    tokens: int


def compare(reference: Sequence[torch.Tensor], candidate: Sequence[torch.Tensor]) -> Comparison:
    diffs, agree, total = [], 0, 0
    for a, b in zip(reference, candidate, strict=True):
        if a.shape != b.shape:
            raise UserError(f"logit shapes differ: HF {list(a.shape)} vs Megatron {list(b.shape)}")
        diffs.append((a - b).abs().max().item())
        agree += int((a.argmax(-1) == b.argmax(-1)).sum())
        total += a.shape[0]
    return Comparison(max(diffs), agree / total, total)
