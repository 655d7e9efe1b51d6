"""Core attention for packed (THD) batches and context parallelism, without Transformer Engine.

megatron-core's local DotProductAttention refuses packed_seq_params and cp > 1; TE does both but
only on a GPU with TE installed. `TorchCoreAttention` fills the same ModuleSpec slot
(`self_attention.submodules.core_attention`) so packing and CP run in CPU CI and on GPUs
without TE. Semantics match TE's THD path: causal within each document, nothing across
documents, padding attends to nothing and is attended by nothing (its output is zero).

Kernels (all compute the same function; see docs/attention.md):
- `reference`: a plain masked matmul/softmax per segment (the CPU default). Memory is bounded
  by one segment's score block, O(heads · n_q · n_kv) <= O(heads · max_doc_len² / cp), never
  O(T²).
- `sdpa`: torch SDPA per segment with a bottom-right causal bias, which dispatches to the
  flash / memory-efficient kernels on CUDA and never materializes the score matrix. The CUDA
  default (unmeasured: no GPU was available when it was written).
- `flex`: FlexAttention over the whole micro-batch with a document block mask (compiled on
  CUDA). Selectable; forward-only on CPU (torch has no CPU backward for it).

Context parallelism is the all-gather design used for Llama 3: keys and values are gathered
over the CP group (reduce-scattered in backward), local queries attend them with masks built
from each token's global position within its document.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from megatron.core.process_groups_config import ProcessGroupCollection
from megatron.core.transformer.enums import AttnMaskType
from megatron.core.transformer.module import MegatronModule
from torch.nn.attention.bias import causal_lower_right
from torch.nn.attention.flex_attention import create_block_mask, flex_attention

from nemo_terminal.errors import UserError
from nemo_terminal.models.attention_cp import (
    SegmentTable,
    build_segment_table,
    gather_full_sequence,
    segment_table_for_step,
)
from nemo_terminal.runtime.device import Device

log = logging.getLogger(__name__)

KERNELS = ("auto", "reference", "sdpa", "flex")

Kernel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, float], torch.Tensor]


def reference_segment(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """q [n_q, h, d], k/v [n_kv, g, d] -> [n_q, h, d]; query i sees keys [0, n_kv - n_q + i].

    Written as plainly as possible: it is the oracle the faster kernels are checked against.
    """
    n_q, n_kv = q.shape[0], k.shape[0]
    rep = q.shape[1] // k.shape[1]  # grouped-query attention: each KV head serves `rep` heads
    k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    scores = torch.einsum("qhd,khd->hqk", q.float(), k.float()) * scale
    future = torch.arange(n_kv, device=q.device)[None, :] > torch.arange(n_q, device=q.device)[:, None] + (n_kv - n_q)
    probs = torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1)
    return torch.einsum("hqk,khd->qhd", probs, v.float()).to(q.dtype)


def sdpa_segment(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """The same function through F.scaled_dot_product_attention (flash / efficient on CUDA).

    KV heads are expanded to the query heads (linear memory) instead of enable_gqa: not every
    fused kernel, nor the lower-right causal bias's own dispatch, takes GQA, and a fallback to
    the math kernel would materialize the score matrix.
    """
    n_q, n_kv = q.shape[0], k.shape[0]
    rep = q.shape[1] // k.shape[1]
    q4, k4, v4 = (x.transpose(0, 1).unsqueeze(0) for x in (q, k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)))
    if n_q == n_kv:
        out = F.scaled_dot_product_attention(q4, k4, v4, is_causal=True, scale=scale)
    else:
        out = F.scaled_dot_product_attention(q4, k4, v4, attn_mask=causal_lower_right(n_q, n_kv), scale=scale)
    return out.squeeze(0).transpose(0, 1)


def attend_segments(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, table: SegmentTable, scale: float,
                    kernel: Kernel) -> torch.Tensor:
    """q [T, h, d] local rows, k/v [T_full, g, d] full coordinates -> [T, h, d]; padding rows zero."""
    pieces, cursor = [], 0
    for seg in table.segments:
        if seg.q_start > cursor:
            pieces.append(q.new_zeros((seg.q_start - cursor, *q.shape[1:-1], v.shape[-1])))
        kv = slice(seg.kv_start, seg.kv_start + seg.n_kv)
        pieces.append(kernel(q[seg.q_start:seg.q_start + seg.n_q], k[kv], v[kv], scale))
        cursor = seg.q_start + seg.n_q
    if cursor < q.shape[0]:
        pieces.append(q.new_zeros((q.shape[0] - cursor, *q.shape[1:-1], v.shape[-1])))
    return torch.cat(pieces, dim=0)


@functools.lru_cache(maxsize=2)
def _flex(compiled: bool):
    # Eager flex materializes the score matrix; compiled, it is a fused block-sparse kernel.
    return torch.compile(flex_attention, dynamic=False) if compiled else flex_attention


def flex_attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, table: SegmentTable, scale: float) -> torch.Tensor:
    """One FlexAttention call over the whole micro-batch with a document-causal block mask."""
    dev = q.device
    on_accelerator = Device(dev).is_accelerator
    q_doc, q_off, q_real = (torch.as_tensor(a, device=dev)
                            for a in table.token_doc_and_offset(table.local_positions.numpy()))
    k_doc, k_off, k_real = (torch.as_tensor(a, device=dev) for a in table.token_doc_and_offset(
        torch.arange(table.num_full).numpy()))

    def mask_mod(b, h, qi, ki):
        return (q_doc[qi] == k_doc[ki]) & (k_off[ki] <= q_off[qi]) & q_real[qi] & k_real[ki]

    # Compiled on CUDA so the mask is evaluated block by block, never as a [T, T_full] tensor.
    block_mask = create_block_mask(mask_mod, None, None, q.shape[0], k.shape[0], device=dev,
                                   _compile=on_accelerator)
    q4, k4, v4 = (x.transpose(0, 1).unsqueeze(0) for x in (q, k, v))
    out = _flex(on_accelerator)(q4, k4, v4, block_mask=block_mask, scale=scale, enable_gqa=True)
    out = out.squeeze(0).transpose(0, 1)
    return out * q_real[:, None, None].to(out.dtype)  # fully masked rows: zero, like the other kernels


def resolve_kernel(kernel: str, device: torch.device) -> str:
    """`auto` -> `sdpa` on CUDA (flash kernels, no compile), `reference` elsewhere."""
    if kernel not in KERNELS:
        raise UserError(f"attention kernel must be one of {KERNELS}, got {kernel!r}")
    if kernel == "auto":
        return "sdpa" if Device(device).is_accelerator else "reference"
    return kernel


def packed_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, table: SegmentTable, scale: float,
                     kernel: str = "auto", cp_group=None) -> torch.Tensor:
    """Document-causal attention of local THD rows: q [T, h, d], k/v [T, g, d] -> [T, h, d].

    With a CP group of size > 1, k/v are this rank's zigzag share and are gathered first.
    """
    if cp_group is not None and cp_group.size() > 1:
        kv = gather_full_sequence(torch.cat([k, v], dim=-1), table, cp_group)  # one collective, not two
        k, v = kv.split([k.shape[-1], v.shape[-1]], dim=-1)
    assert k.shape[0] == table.num_full, (k.shape, table.num_full)
    name = resolve_kernel(kernel, q.device)
    if name == "flex":
        return flex_attend(q, k, v, table, scale)
    return attend_segments(q, k, v, table, scale, reference_segment if name == "reference" else sdpa_segment)


class TorchCoreAttention(MegatronModule):
    """Drop-in for TEDotProductAttention in the local layer spec: THD packing, GQA and CP in torch.

    Built by megatron's Attention with the core-attention builder signature. `kernel` picks the
    implementation (see module docstring); bind it with functools.partial in a spec.
    """

    def __init__(self, config, layer_number: int, attn_mask_type, attention_type: str,
                 attention_dropout: float | None = None, softmax_scale: float | None = None,
                 cp_comm_type: str | None = None, pg_collection=None, kernel: str = "auto"):
        super().__init__(config=config)

        dropout = config.attention_dropout if attention_dropout is None else attention_dropout
        if dropout:
            raise UserError(f"attention_backend=torch supports attention_dropout=0 only (Qwen3 uses 0), got {dropout}")
        if config.apply_query_key_layer_scaling or config.softmax_type != "vanilla" or config.window_size is not None:
            raise UserError("attention_backend=torch supports plain softmax attention only: unset "
                            "apply_query_key_layer_scaling, softmax_type and window_size")
        if cp_comm_type not in (None, "all_gather"):
            log.warning("attention_backend=torch implements cp_comm_type=all_gather; ignoring %r", cp_comm_type)
        if attn_mask_type != AttnMaskType.causal:
            raise UserError(f"attention_backend=torch implements causal self-attention, got {attn_mask_type}")
        resolve_kernel(kernel, torch.device("cpu"))  # validate early
        if pg_collection is None:
            pg_collection = ProcessGroupCollection.use_mpu_process_groups(required_pgs=["tp", "cp"])
        tp = pg_collection.tp.size()
        self.cp_group = pg_collection.cp
        self.num_heads = config.num_attention_heads // tp
        self.num_groups = config.num_query_groups // tp
        self.head_dim = config.kv_channels
        # Qwen3 (and megatron's default): 1/sqrt(head_dim); a config value wins, as in TE.
        self.softmax_scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(self.head_dim)
        self.layer_number = layer_number
        self.kernel = kernel

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                attention_mask: torch.Tensor | None, attn_mask_type=None,
                attention_bias: torch.Tensor | None = None, packed_seq_params=None) -> torch.Tensor:
        """THD: q [T, h, d] -> [T, h·d]. SBHD: q [s, b, h, d] -> [s, b, h·d], each row one document."""
        if attention_bias is not None:
            raise ValueError("attention_backend=torch does not take attention_bias")
        if attention_mask is not None:
            raise ValueError("attention_backend=torch builds causal/document masks itself: pass "
                             "attention_mask=None (and packed_seq_params for packed batches)")
        cp_size, cp_rank = self.cp_group.size(), self.cp_group.rank()
        if packed_seq_params is not None:
            p = packed_seq_params
            if p.qkv_format != "thd":
                raise ValueError(f"packed_seq_params.qkv_format must be 'thd', got {p.qkv_format!r}")
            kv = p.cu_seqlens_kv
            if kv is not None and kv is not p.cu_seqlens_q and not torch.equal(kv, p.cu_seqlens_q):
                raise ValueError("attention_backend=torch is self-attention: cu_seqlens_kv must equal cu_seqlens_q")
            if query.dim() == 4:  # [T, 1, h, d] where a caller did not squeeze
                query, key, value = query.squeeze(1), key.squeeze(1), value.squeeze(1)
            table = segment_table_for_step(p.cu_seqlens_q, p.cu_seqlens_q_padded, query.shape[0], cp_size, cp_rank)
            out = packed_attention(query, key, value, table, self.softmax_scale, self.kernel, self.cp_group)
            return out.reshape(out.shape[0], -1)
        # SBHD: each batch row is one document spanning the whole sequence (zigzag-split under CP,
        # as megatron's rope assumes for unpacked CP).
        s = query.shape[0]
        full = torch.tensor([0, s * cp_size])
        table = build_segment_table(full, full, s, cp_size, cp_rank)
        rows = [packed_attention(query[:, b], key[:, b], value[:, b], table, self.softmax_scale, self.kernel,
                                 self.cp_group) for b in range(query.shape[1])]
        return torch.stack(rows, dim=1).reshape(s, query.shape[1], -1)
