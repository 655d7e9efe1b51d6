"""The planner's activation formula against what megatron-core really keeps for backward.

One real megatron-core TransformerLayer (our local layer spec, fp32 on CPU) runs forward on a
packed THD micro-batch under `torch.autograd.graph.saved_tensors_hooks`; every saved tensor's
storage is counted once (deduplicated by its untyped storage's data_ptr, parameters excluded).
Core attention is a stand-in that keeps exactly what TE's fused attention / flash-attention keep
(q, k, v, output and fp32 softmax statistics, one per head and token) while computing with our
reference kernel: the reference kernel itself keeps score blocks, which no GPU kernel does. The
local spec cannot run sequence parallelism (megatron's torch RMSNorm asserts it off), so SP is
not measured here; it only divides the norm and linear inputs by tp.
Tolerance: the planner within 5% of the measurement, per shape.
"""

from __future__ import annotations

import pytest
import torch

from nemo_terminal.testing import run_distributed

# (tp, heads, kv heads, fused SwiGLU): GQA ratios 1/2/4, one and several KV groups per TP rank.
CASES = [(1, 4, 4, True), (1, 8, 4, False), (1, 8, 2, True), (1, 4, 1, False),
         (2, 4, 4, False), (2, 8, 4, True), (2, 8, 2, False), (2, 8, 2, True)]
HIDDEN, HEAD_DIM, FFN = 128, 64, 192
CU_SEQLENS = [0, 24, 64]  # two documents packed into one 64-token THD micro-batch


class _FusedAttentionSaves(torch.autograd.Function):
    """Keeps what TE's FusedAttnFunc keeps: q, k, v, out and fp32 softmax statistics [T, heads]."""

    @staticmethod
    def forward(ctx, q, k, v, attend):
        out = attend(q, k, v)
        stats = torch.zeros(q.shape[0], out.shape[-1] // q.shape[-1], dtype=torch.float32)
        ctx.save_for_backward(q, k, v, out, stats)
        return out

    @staticmethod
    def backward(ctx, grad):  # never called: the test measures the forward's saves
        raise NotImplementedError


def _fused_attention_class():
    from nemo_terminal.models.attention import TorchCoreAttention

    class FusedAttentionStandIn(TorchCoreAttention):
        def forward(self, query, key, value, attention_mask, attn_mask_type=None, attention_bias=None,
                    packed_seq_params=None):
            parent = super().forward
            return _FusedAttentionSaves.apply(
                query, key, value,
                lambda q, k, v: parent(q, k, v, attention_mask, attn_mask_type, attention_bias, packed_seq_params))

    return FusedAttentionStandIn


def _measure(tp: int, heads: int, kv_heads: int, fused: bool) -> tuple[int, float]:
    """(bytes megatron-core's layer saves on this rank, the planner's A_layer for the same shape)."""
    from megatron.core.models.common.embeddings.rotary_pos_embedding import RotaryEmbedding
    from megatron.core.packed_seq_params import PackedSeqParams
    from megatron.core.transformer.spec_utils import build_module

    from nemo_terminal.models.provider import layer_spec, to_transformer_config
    from nemo_terminal.models.qwen3 import Qwen3Config
    from nemo_terminal.runtime.distributed import init_parallel_state
    from nemo_terminal.runtime.parallel import ParallelConfig
    from nemo_terminal.training.planner import Kernels, activation_bytes_per_layer

    parallel = ParallelConfig(tp=tp)
    init_parallel_state(parallel, seed=3)
    cfg = Qwen3Config(num_hidden_layers=1, hidden_size=HIDDEN, num_attention_heads=heads,
                      num_key_value_heads=kv_heads, head_dim=HEAD_DIM, intermediate_size=FFN)
    tcfg = to_transformer_config(cfg, tp=tp, precision="fp32", bias_activation_fusion=fused)
    spec = layer_spec("torch")
    spec.submodules.self_attention.submodules.core_attention = _fused_attention_class()
    layer = build_module(spec, config=tcfg, layer_number=1)
    tokens = CU_SEQLENS[-1]
    cu = torch.tensor(CU_SEQLENS, dtype=torch.int32)
    longest = int((cu[1:] - cu[:-1]).max())
    packed = PackedSeqParams(qkv_format="thd", cu_seqlens_q=cu, cu_seqlens_kv=cu, max_seqlen_q=longest,
                             max_seqlen_kv=longest)
    rope = RotaryEmbedding(kv_channels=HEAD_DIM, rotary_percent=1.0, rotary_base=1_000_000)(longest, packed_seq=True)
    x = torch.randn(tokens, 1, HIDDEN, generator=torch.Generator().manual_seed(0), requires_grad=True)

    params = {p.untyped_storage().data_ptr() for p in layer.parameters()}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            saved.setdefault(storage.data_ptr(), storage.nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out, _ = layer(x, attention_mask=None, rotary_pos_emb=rope, packed_seq_params=packed)
    assert out.shape == x.shape
    kernels = Kernels(swiglu_fusion=fused, rope_fusion=False, te_norms=False)
    planned = activation_bytes_per_layer(cfg, parallel, seq_length=tokens, micro_batch=1, kernels=kernels,
                                         element_bytes=4)
    return sum(saved.values()), planned


def _all_cases() -> list[tuple[int, float]]:
    torch._dynamo.config.disable = True  # the fused SwiGLU eagerly: same saves, no 15 s compile per shape
    return [_measure(*case) for case in CASES]


@pytest.fixture(scope="module")
def measured() -> list[list[tuple[int, float]]]:
    return run_distributed(_all_cases, world_size=2)


@pytest.mark.parametrize("index", range(len(CASES)), ids=[f"tp{c[0]}-a{c[1]}-k{c[2]}-{'fused' if c[3] else 'unfused'}"
                                                           for c in CASES])
def test_planner_within_5_percent_of_saved_tensors(measured, index):
    (saved0, planned), (saved1, _) = measured[0][index], measured[1][index]
    assert saved0 == saved1  # both TP ranks (or both DP replicas) keep the same amount
    assert abs(planned - saved0) <= 0.05 * saved0, f"planner {planned:.0f} B vs megatron-core {saved0} B"
