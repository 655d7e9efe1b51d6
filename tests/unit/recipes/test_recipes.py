"""The shipped Qwen3 recipes: they load, carry the paper's hyperparameters, and fit 80 GB by the
planner at the node count their own comments state (an "80 GB" H100 = 79.6 GiB, less the default
headroom) (so comment and layout cannot drift apart)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from nemo_terminal.models.qwen3 import qwen3_size
from nemo_terminal.training.config import load_config
from nemo_terminal.training.planner import GIB, GPU_GIB, PlanInput, estimate, fits

CONFIGS = Path(__file__).resolve().parents[3] / "configs"
RECIPES = sorted(CONFIGS.glob("qwen3_*.yaml"))
USER_KEYS = ["model.megatron_dir=x", "data.path=y"]


def _stated(path: Path) -> dict:
    """What the recipe's comments promise: nodes, size, seq length, the planner's estimate."""
    text = path.read_text()
    nodes = int(re.search(r"# Nodes: (\d+) x 8 H100-80GB", text).group(1))
    size = re.match(r"qwen3_(\d+b)_", path.stem).group(1)
    seq = int(re.search(r"_(\d+)k", path.stem).group(1)) * 1024
    assert f"--seq-length {seq}" in text, f"{path.name} must state its sequence length {seq}"
    estimate_gib = float(re.search(r"estimates ([\d.]+) GiB", text).group(1))
    return dict(gpus=nodes * 8, size=size, seq=seq, estimate=estimate_gib)


def test_the_four_recipes_ship():
    names = {p.name for p in RECIPES}
    assert names == {"qwen3_8b_terminal_sft_32k.yaml", "qwen3_14b_terminal_sft_32k.yaml",
                     "qwen3_32b_terminal_sft_32k.yaml", "qwen3_8b_terminal_sft_64k_yarn.yaml"}


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_loads_with_paper_hyperparameters(path):
    cfg = load_config(path, USER_KEYS)
    t = cfg.train
    assert (t.lr, t.weight_decay, t.adam_beta1, t.adam_beta2) == (2e-5, 1e-4, 0.9, 0.95)
    assert (t.warmup_fraction, t.clip_grad, t.epochs, t.max_steps) == (0.1, 1.0, 2.0, None)
    assert (t.global_batch_size, t.micro_batch_size, t.precision) == (128, 1, "bf16")
    assert cfg.checkpoint.resume == "auto"  # what makes Slurm requeue resume
    stated = _stated(path)
    model = qwen3_size(stated["size"])
    cfg.parallel.check_model(model.num_hidden_layers, model.num_attention_heads, model.num_key_value_heads)
    dp = cfg.parallel.dp(stated["gpus"])
    assert t.micro_batches_per_step(dp) >= cfg.parallel.pp  # enough micro-batches to fill the pipeline


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_fits_an_h100_by_its_own_estimate(path):
    cfg = load_config(path, USER_KEYS)
    stated = _stated(path)
    plan = estimate(PlanInput(
        model=qwen3_size(stated["size"]), parallel=cfg.parallel, seq_length=stated["seq"],
        num_gpus=stated["gpus"], micro_batch_size=cfg.train.micro_batch_size,
        global_batch_size=cfg.train.global_batch_size, precision=cfg.train.precision,
        recompute=cfg.train.recompute, rope_fusion=cfg.train.rope_fusion and not cfg.model.yarn_factor,
    ))
    assert fits(plan, GPU_GIB["h100"]), f"{path.name}: {plan.total / GIB:.1f} GiB (with the default headroom)"
    assert abs(plan.total / GIB - stated["estimate"]) < 0.5, "the comment's estimate is stale"


def test_yarn_recipe_sets_yarn():
    cfg = load_config(CONFIGS / "qwen3_8b_terminal_sft_64k_yarn.yaml", USER_KEYS)
    assert cfg.model.yarn_factor == 2.0 and cfg.model.yarn_original_max_position == 32768
    assert cfg.model.yarn_factor * cfg.model.yarn_original_max_position == 65536


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_needs_the_user_paths(path):
    from nemo_terminal.errors import UserError

    with pytest.raises(UserError):
        load_config(path, [])
