"""Module-level runs for `run_distributed` (spawned processes import them by name).

Each run builds a tiny HF Qwen3 with the same seed on every rank, copies it into megatron
GPTModels with attention_backend="torch", and returns plain numbers for the test to judge.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import torch
from _attn_hf_weights import SHAPE, hf_to_megatron_state, load_into, tiny_hf_model

SEQ_LENGTH = 40
PAD_ID = 151643
# Two bins of documents (unpadded lengths); padded to multiples of 4 = 2·cp for cp=2. The 8-token
# document needs no padding; each bin's unused tail joins its last document.
BIN_DOCS = [[8, 13, 5], [17, 9]]


def _bins(seed: int = 0):
    from nemo_terminal.data.store import Bin

    rng = np.random.default_rng(seed)
    bins, docs = [], []
    for lens in BIN_DOCS:
        padded = [-(-n // 4) * 4 for n in lens]
        tokens = np.full(sum(padded), PAD_ID, dtype=np.int32)
        mask = np.zeros(sum(padded), dtype=np.uint8)
        start = 0
        for n, p in zip(lens, padded, strict=False):
            doc = rng.integers(0, 150000, n)
            tokens[start:start + n] = doc
            mask[start:start + n] = rng.random(n) < 0.7
            docs.append(torch.from_numpy(doc))
            start += p
        bins.append(Bin(tokens, mask, np.array(lens), np.array(padded)))
    return bins, docs


def _model(hf, cfg, tcfg_kwargs: dict, pp_rank: int = 0, pp: int = 1):
    from nemo_terminal.models.provider import build_gpt_model, to_transformer_config

    per_stage = cfg.num_hidden_layers // pp
    pre, post = pp_rank == 0, pp_rank == pp - 1
    tcfg = to_transformer_config(cfg, pp=pp, perform_initialization=False, **tcfg_kwargs)  # HF weights follow
    model = build_gpt_model(cfg, tcfg, attention_backend="torch", pre_process=pre, post_process=post)
    load_into(model, hf_to_megatron_state(hf, pp_rank * per_stage, per_stage, pre, post))
    return model


def _qwen3_config():
    from nemo_terminal.models.qwen3 import Qwen3Config

    return Qwen3Config(**SHAPE, tie_word_embeddings=False)


def _forward(model, batch, labels: bool):
    from nemo_terminal.data.loader.batches import packed_seq_params

    return model(batch["tokens"], batch["position_ids"], None, labels=batch["labels"] if labels else None,
                 packed_seq_params=packed_seq_params(batch))


def _hf_logit_error(hf, docs, logits: torch.Tensor, batch) -> float:
    """Max |packed - per-document HF| over this rank's real tokens (logits [T, V])."""
    cu_padded = batch["cu_seqlens_padded"].long()
    globals_ = _global_positions(batch)  # each local row's position in the full sequence
    err = 0.0
    with torch.no_grad():
        for d, doc in enumerate(docs):
            ref = hf(input_ids=doc[None]).logits[0]  # [L, V]
            rows = torch.nonzero((globals_ >= cu_padded[d]) & (globals_ < cu_padded[d] + len(doc))).flatten()
            err = max(err, float((logits[rows] - ref[globals_[rows] - cu_padded[d]]).abs().max()))
    return err


def _bshd_logit_error(hf, model, doc: torch.Tensor, cp: int) -> float:
    """Unpacked [b=1, s] input (no packed_seq_params): one causal document, zigzag-split under CP."""
    from megatron.core import parallel_state as ps

    from nemo_terminal.runtime.context_parallel import zigzag_indices

    assert len(doc) % (2 * cp) == 0
    rows = zigzag_indices(torch.tensor([0, len(doc)]), cp, ps.get_context_parallel_rank())
    with torch.no_grad():
        logits = model(doc[rows][None], rows[None], None)[0]  # [s/cp, V]
        ref = hf(input_ids=doc[None]).logits[0][rows]
    return float((logits - ref).abs().max())


def _global_positions(batch) -> torch.Tensor:
    from megatron.core import parallel_state as ps

    from nemo_terminal.runtime.context_parallel import zigzag_indices

    return zigzag_indices(batch["cu_seqlens_padded"], ps.get_context_parallel_world_size(),
                          ps.get_context_parallel_rank())


def _rope_error(hf, model, batch) -> float:
    """megatron's THD rope (cu_seqlens_padded, CP rank) vs HF rope at the batch's per-doc positions."""
    from megatron.core import parallel_state as ps
    from megatron.core.models.common.embeddings.rope_utils import apply_rotary_pos_emb
    from transformers.models.qwen3.modeling_qwen3 import apply_rotary_pos_emb as hf_apply

    t, h, d = batch["tokens"].shape[1], SHAPE["num_attention_heads"], SHAPE["head_dim"]
    x = torch.randn(t, h, d, generator=torch.Generator().manual_seed(5))
    freqs = model.rotary_pos_emb(batch["max_seqlen"], packed_seq=True)  # what GPTModel computes
    ours = apply_rotary_pos_emb(x, freqs, model.config, cu_seqlens=batch["cu_seqlens_padded"],
                                cp_group=ps.get_context_parallel_group())
    cos, sin = hf.model.rotary_emb(x, batch["position_ids"])
    ref, _ = hf_apply(x.transpose(0, 1)[None], x.transpose(0, 1)[None], cos, sin)
    return float((ours - ref[0].transpose(0, 1)).abs().max())


def _loss_and_grads(model, batch, cp_group=None) -> tuple[float, dict[str, torch.Tensor]]:
    """Sum of masked per-token losses over the whole (CP-split) sequence and its parameter grads."""
    import torch.distributed as dist

    model.zero_grad(set_to_none=True)
    per_token = _forward(model, batch, labels=True)  # [1, T]
    loss = (per_token * batch["loss_mask"]).sum()
    loss.backward()
    total = loss.detach().clone()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
    if cp_group is not None:  # what DDP over dp×cp does: sum gradients across the CP ranks
        dist.all_reduce(total, group=cp_group)
        for g in grads.values():
            dist.all_reduce(g, group=cp_group)
    return float(total), grads


def packed_cp_run() -> dict:
    """CP=1 then CP=2 on the same two packed bins: HF logit parity, rope parity, loss and grads."""
    from megatron.core import parallel_state as ps

    from nemo_terminal.data.loader.batches import build_micro_batch
    from nemo_terminal.runtime.distributed import init_parallel_state
    from nemo_terminal.runtime.parallel import ParallelConfig

    hf, cfg = tiny_hf_model(seed=0), _qwen3_config()
    bins, docs = _bins()
    out: dict = {}
    results = {}
    for cp in (1, 2):
        init_parallel_state(ParallelConfig(cp=cp), seed=1)
        model = _model(hf, cfg, dict(cp=cp))
        batch = build_micro_batch(bins, SEQ_LENGTH, PAD_ID, cp_size=cp, cp_rank=ps.get_context_parallel_rank())
        with torch.no_grad():
            logits = _forward(model, batch, labels=False)[0]  # [T, V]
        out[f"hf_logit_err_cp{cp}"] = _hf_logit_error(hf, docs, logits, batch)
        out[f"rope_err_cp{cp}"] = _rope_error(hf, model, batch)
        if cp == 1:  # unpacked CP needs megatron's get_pos_emb_on_this_cp_rank: pin_memory=True fails on CPU
            out["bshd_logit_err_cp1"] = _bshd_logit_error(hf, model, docs[0], cp)
        results[cp] = _loss_and_grads(model, batch, ps.get_context_parallel_group() if cp > 1 else None)
    (l1, g1), (l2, g2) = results[1], results[2]
    out["loss_cp1"], out["loss_cp2"] = l1, l2
    out["grad_rel_err"] = {n: float((g2[n] - g1[n]).norm() / g1[n].norm()) for n in g1}
    out["grad_norms"] = {n: float(g1[n].norm()) for n in g1}
    return out


def _pp_loss_func(mask, output):
    losses = output.float().reshape(-1) * mask.reshape(-1)
    return losses.sum(), mask.sum().to(torch.int), {"lm loss": torch.stack([losses.sum().detach(), mask.sum()])}


def _pp_step(seen: list, data_iterator, model):
    """forward_step_func: the batch's packed_seq_params go to every stage, first or not."""
    from nemo_terminal.data.loader.batches import packed_seq_params

    batch = next(data_iterator)
    params = packed_seq_params(batch)
    seen.append(int(params.cu_seqlens_q_padded[-1]))
    out = model(batch["tokens"], batch["position_ids"], None, labels=batch["labels"], packed_seq_params=params)
    return out, partial(_pp_loss_func, batch["loss_mask"])


def _pp_once(hf, cfg, bins, pp: int) -> dict:
    """Packed bins through megatron's 1F1B schedule at this PP size; loss and grads by global name."""
    import torch.distributed as dist
    from megatron.core import parallel_state as ps
    from megatron.core.pipeline_parallel import get_forward_backward_func

    from nemo_terminal.data.loader.batches import build_micro_batch
    from nemo_terminal.runtime.distributed import init_parallel_state
    from nemo_terminal.runtime.parallel import ParallelConfig

    init_parallel_state(ParallelConfig(pp=pp), seed=1)
    stage = ps.get_pipeline_model_parallel_rank()
    model = _model(hf, cfg, {}, pp_rank=stage, pp=pp)
    micro = [build_micro_batch([b], SEQ_LENGTH, PAD_ID) for b in bins] * 2  # 4 micro-batches, 1 bin each
    seen: list[int] = []
    reports = get_forward_backward_func()(
        forward_step_func=partial(_pp_step, seen), data_iterator=iter(micro), model=[model],
        num_microbatches=len(micro), seq_length=SEQ_LENGTH, micro_batch_size=1,
    )
    total = sum(r["lm loss"] for r in reports) if reports else torch.zeros(2)
    if pp > 1:  # only the last stage holds the loss
        dist.all_reduce(total, group=ps.get_pipeline_model_parallel_group())
    per_stage = cfg.num_hidden_layers // pp
    grads = {}
    for name, p in model.named_parameters():
        parts = name.split(".")
        if parts[:2] == ["decoder", "layers"]:  # local layer index -> global
            parts[2] = str(int(parts[2]) + stage * per_stage)
        grads[".".join(parts)] = p.grad.detach().clone()
    return {"loss_sum": float(total[0]), "tokens": float(total[1]), "grads": grads, "seen_cu_end": seen}


def packed_pp_run() -> dict:
    """PP=1 (dp=2 on identical data: each rank is a full reference) then PP=2, in the same processes."""
    hf, cfg = tiny_hf_model(seed=0), _qwen3_config()
    bins, _ = _bins(seed=1)
    return {pp: _pp_once(hf, cfg, bins, pp) for pp in (1, 2)}
