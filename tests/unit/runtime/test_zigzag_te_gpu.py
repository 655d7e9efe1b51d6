"""Our CP split (`zigzag_indices`) equals Transformer Engine's `thd_get_partitioned_indices`.

GPU + TE only (skipped elsewhere; tools/gpu_check.sh runs it). A reviewer checked this numerically
once; this keeps it checked against whichever TE the container ships. Exact equality of indices.
"""

from __future__ import annotations

import random

import pytest
import torch

from nemo_terminal.runtime.context_parallel import zigzag_indices

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("cp", [2, 4])
def test_zigzag_equals_te_partitioned_indices(cp):
    tex = pytest.importorskip("transformer_engine_torch")
    rng = random.Random(cp)
    for _ in range(200):
        lens = [2 * cp * rng.randint(1, 64) for _ in range(rng.randint(1, 8))]  # padded to 2·cp, as prepared
        cu = torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()], dtype=torch.int32)
        total = int(cu[-1])
        for rank in range(cp):
            te = tex.thd_get_partitioned_indices(cu.cuda(), total, cp, rank)
            assert torch.equal(te.cpu().long(), zigzag_indices(cu, cp, rank)), (lens, rank)
