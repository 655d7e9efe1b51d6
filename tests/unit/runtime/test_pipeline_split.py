"""Uneven pipeline splits: our per-stage layer counts equal megatron-core's own
(`transformer_block.get_num_layers_to_build`), and an impossible split is refused naming one that works."""

from __future__ import annotations

import pytest

from nemo_terminal.errors import UserError
from nemo_terminal.runtime.parallel import ParallelConfig
from nemo_terminal.runtime.pipeline_split import stage_layers


def _megatron_counts(layers: int, pp: int, vpp, first, last) -> list[int]:
    from megatron.core.transformer import TransformerConfig
    from megatron.core.transformer.transformer_block import get_num_layers_to_build

    cfg = TransformerConfig(num_layers=layers, hidden_size=8, num_attention_heads=1, pipeline_model_parallel_size=pp,
                            virtual_pipeline_model_parallel_size=vpp, num_layers_in_first_pipeline_stage=first,
                            num_layers_in_last_pipeline_stage=last, pipeline_dtype=__import__("torch").float32)
    return [sum(get_num_layers_to_build(cfg, vp_stage=v, pp_rank=r) for v in range(vpp or 1)) for r in range(pp)]


@pytest.mark.parametrize("layers,pp,vpp,first,last", [
    (3, 2, None, None, 1), (3, 2, None, 2, None), (28, 8, None, 2, 2), (40, 3, None, 14, None),
    (40, 3, None, None, 14), (36, 4, None, None, None), (10, 4, None, 1, 3), (12, 2, 2, 4, None),
    (28, 8, None, None, 7),
])
def test_counts_equal_megatron_core(layers, pp, vpp, first, last):
    ours = stage_layers(layers, pp, vpp, first, last)
    assert ours == _megatron_counts(layers, pp, vpp, first, last) and sum(ours) == layers


@pytest.mark.parametrize("layers,pp,vpp,first,last,fix", [
    (3, 2, None, None, None, "set parallel.last_stage_layers=1 ([2, 1] layers per stage)"),
    (28, 8, None, None, None, "parallel.first_stage_layers=2 parallel.last_stage_layers=2"),
    (3, 2, None, 3, None, "set parallel.last_stage_layers=1"),
    (2, 3, None, None, None, "lower parallel.pp or vpp"),
    (8, 2, 2, 3, None, "must be a positive multiple of vpp=2; unset parallel.first_stage_layers"),
    (4, 1, None, 2, None, "need parallel.pp >= 2"),
])
def test_impossible_split_names_the_fix(layers, pp, vpp, first, last, fix):
    with pytest.raises(UserError) as err:
        ParallelConfig(pp=pp, vpp=vpp, first_stage_layers=first, last_stage_layers=last).check_model(layers, 4, 2)
    assert fix in str(err.value)


def test_suggested_splits_are_accepted_by_megatron_core():
    """The split a message suggests is one megatron-core builds (checked for every Qwen3 depth at pp ≤ 8)."""
    import re

    for layers in (28, 36, 40, 64):
        for pp in range(2, 9):
            try:
                stage_layers(layers, pp)
                continue
            except UserError as err:
                msg = str(err)
            first = re.search(r"first_stage_layers=(\d+)", msg)
            last = re.search(r"last_stage_layers=(\d+)", msg)
            f, l_ = (int(first[1]) if first else None), (int(last[1]) if last else None)
            assert first or last, msg
            assert _megatron_counts(layers, pp, None, f, l_) == stage_layers(layers, pp, None, f, l_)


def test_plan_counts_each_stage_with_its_own_layers():
    """plan at an uneven split: the first/last stages hold their own layer counts, the middle ones the rest."""
    from nemo_terminal.models.qwen3 import Qwen3Config
    from nemo_terminal.training.planner import layer_params_per_rank, stage_params

    m = Qwen3Config(num_hidden_layers=28, hidden_size=1024, num_attention_heads=16, num_key_value_heads=8,
                    head_dim=128, intermediate_size=3072, tie_word_embeddings=True)
    p = ParallelConfig(pp=8, first_stage_layers=2, last_stage_layers=2)
    layer, emb = layer_params_per_rank(m, 1), m.vocab_size * m.hidden_size
    assert stage_params(m, p, "first") == 2 * layer + emb
    assert stage_params(m, p, "middle") == 4 * layer
    assert stage_params(m, p, "last") == 2 * layer + emb + m.hidden_size
