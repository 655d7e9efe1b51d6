"""max_seqlen of a micro-batch: few distinct values (megatron caches one RoPE table per value),
never below the longest document, and never the value that flips megatron's THD RoPE to global positions."""

from __future__ import annotations

import random

import pytest
import torch

from nemo_terminal.data.loader.batches import rope_max_seqlen


def test_bounded_keys_and_upper_bound():
    rng = random.Random(0)
    seq_length = 32768
    seen = set()
    for _ in range(5000):
        mbs = rng.choice([1, 2])
        longest = rng.randint(1, seq_length)
        value = rope_max_seqlen(longest, seq_length, mbs * seq_length)
        assert longest <= value <= max(2 * longest, longest)
        assert value != mbs * seq_length or longest == mbs * seq_length
        seen.add(value)
    assert len(seen) <= 15 + 2 < 32  # under RotaryEmbedding.forward's lru_cache(maxsize=32)


def _rope_thd(max_seqlen: int, cu: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    from megatron.core.models.common.embeddings.rope_utils import apply_rotary_pos_emb
    from megatron.core.models.common.embeddings.rotary_pos_embedding import RotaryEmbedding
    from megatron.core.transformer import TransformerConfig

    from nemo_terminal.runtime.distributed import init_parallel_state
    from nemo_terminal.runtime.parallel import ParallelConfig

    init_parallel_state(ParallelConfig())
    from megatron.core import parallel_state

    cfg = TransformerConfig(num_layers=1, hidden_size=16, num_attention_heads=2, apply_rope_fusion=False)
    freqs = RotaryEmbedding(kv_channels=8, rotary_percent=1.0)(max_seqlen, packed_seq=True)
    return apply_rotary_pos_emb(t, freqs, cfg, cu_seqlens=cu, cp_group=parallel_state.get_context_parallel_group())


@pytest.mark.parametrize("lens", [[5, 11], [3, 3, 10]])
def test_rounded_value_gives_the_exact_value_rope(lens):
    """RoPE through megatron's THD path is the same with the rounded max_seqlen as with the exact one;
    a table of exactly t_full rows would (wrongly) offset every later document."""
    cu = torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()], dtype=torch.int32)
    t_full, longest = int(cu[-1]), max(lens)
    t = torch.randn(t_full, 2, 8, generator=torch.Generator().manual_seed(1))
    exact = _rope_thd(longest, cu, t)
    assert torch.equal(_rope_thd(rope_max_seqlen(longest, t_full, t_full), cu, t), exact)
    assert not torch.allclose(_rope_thd(t_full, cu, t), exact)  # the trap the rounding avoids
