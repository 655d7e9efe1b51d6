"""What a resume may change, the re-planned LR schedule, one metrics row per step, context length."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from nemo_terminal.errors import UserError
from nemo_terminal.training.config import load_config, to_yaml
from nemo_terminal.training.metrics import keep_rows_up_to
from nemo_terminal.training.preflight import check_context_length
from nemo_terminal.training.resume_config import check_resume_config

REPO = Path(__file__).resolve().parents[3]


def _cfg(tmp_path: Path, *overrides: str):
    (tmp_path / "meg").mkdir(exist_ok=True)
    (tmp_path / "data").mkdir(exist_ok=True)
    base = [f"run_dir={tmp_path / 'run'}", f"model.megatron_dir={tmp_path / 'meg'}", f"data.path={tmp_path / 'data'}"]
    return load_config(REPO / "configs" / "tiny_cpu.yaml", base + list(overrides))


def _saved(tmp_path: Path, *overrides: str) -> Path:
    path = tmp_path / "run" / "config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(to_yaml(_cfg(tmp_path, *overrides)))
    return path


def test_run_length_intervals_and_keep_last_may_change(tmp_path):
    saved = _saved(tmp_path, "train.max_steps=6", "checkpoint.save_interval=2")
    cfg = _cfg(tmp_path, "train.max_steps=12", "checkpoint.save_interval=1", "checkpoint.keep_last=5",
               "log.interval=3", "checkpoint.resume=auto")
    changes = check_resume_config(saved, cfg, saved.parent / "iter_0000002")
    assert "train.max_steps: 6 -> 12" in changes and len(changes) == 4


@pytest.mark.parametrize("override, key", [
    ("train.lr=5e-4", "train.lr"), ("train.min_lr=1e-6", "train.min_lr"),
    ("train.warmup_fraction=0.3", "train.warmup_fraction"), ("train.adam_beta2=0.99", "train.adam_beta2"),
    ("parallel.tp=2", "parallel.tp"), ("data.seed=7", "data.seed"),
])
def test_other_changes_are_refused_naming_the_key_and_the_new_run_way(tmp_path, override, key):
    saved = _saved(tmp_path, "train.max_steps=6")
    cfg = _cfg(tmp_path, "train.max_steps=6", override)
    with pytest.raises(UserError) as err:
        check_resume_config(saved, cfg, saved.parent / "iter_0000002")
    assert str(err.value).count(key) >= 2 and f"model.megatron_dir={saved.parent}" in str(err.value)


def test_changed_megatron_dir_is_refused(tmp_path):
    saved = _saved(tmp_path)
    (tmp_path / "other").mkdir()
    cfg = _cfg(tmp_path, f"model.megatron_dir={tmp_path / 'other'}")
    with pytest.raises(UserError, match="model.megatron_dir was"):
        check_resume_config(saved, cfg, saved.parent / "iter_0000002")


def _scheduler(total: int, lr: float = 1e-3, min_lr: float = 1e-5, warmup: int = 2):
    from nemo_terminal.training.schedule import ReplannableScheduler

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    return ReplannableScheduler(opt, init_lr=0.0, max_lr=lr, min_lr=min_lr, lr_warmup_steps=warmup,
                                lr_decay_steps=total, lr_decay_style="cosine", start_wd=0.0, end_wd=0.0,
                                wd_incr_steps=total, wd_incr_style="constant")


@pytest.mark.parametrize("new_total", [16, 7])
def test_length_change_keeps_lr_continuous_and_ends_at_min_lr(new_total):
    old = _scheduler(10)
    old.step(increment=5)
    lr_at_5 = old.optimizer.param_groups[0]["lr"]
    resumed = _scheduler(new_total)  # a resume builds the schedule for the new length, then loads the old state
    resumed.load_state_dict(old.state_dict())
    resumed.change_length(new_total)
    lrs = [resumed.optimizer.param_groups[0]["lr"]]
    for _ in range(5, new_total):
        resumed.step(increment=1)
        lrs.append(resumed.optimizer.param_groups[0]["lr"])
    assert lrs[0] == pytest.approx(lr_at_5, rel=1e-12)  # continuous at the resume step
    assert lrs[-1] == pytest.approx(1e-5, rel=1e-12)  # min_lr at the new last step
    for k, lr in enumerate(lrs):  # an independent cosine from lr(5) to min_lr over steps 5..new_total
        want = 1e-5 + (lr_at_5 - 1e-5) * 0.5 * (1 + math.cos(math.pi * k / (new_total - 5)))
        assert lr == pytest.approx(want, rel=1e-12)
    again = _scheduler(new_total)  # the re-plan is saved with the checkpoint
    again.load_state_dict(resumed.state_dict())
    assert again.optimizer.param_groups[0]["lr"] == pytest.approx(lrs[-1], rel=1e-12)


def test_metrics_keep_one_row_per_step(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": s, "loss": s / 10}) + "\n" for s in (1, 2, 3, 4, 5)))
    keep_rows_up_to(path, 3)
    assert [json.loads(x)["step"] for x in path.read_text().splitlines()] == [1, 2, 3]
    superseded = (tmp_path / "metrics.superseded.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in superseded] == [4, 5]  # moved, not dropped


def test_seq_length_beyond_positions_needs_yarn():
    check_context_length(40960, 40960, None, 32768)
    with pytest.raises(UserError, match=r"seq_length=65536.*max_position_embeddings=40960.*model.yarn_factor"):
        check_context_length(65536, 40960, None, 32768)
    with pytest.raises(UserError, match=r"model.yarn_factor=2.0.*at least 3"):
        check_context_length(98304, 65536, 2.0, 32768)
