"""Data module in one process: omegaconf config, shard refusal, validation split, curriculum end."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from nemo_terminal.data.loader.config import DataConfig
from nemo_terminal.data.loader.module import TerminalDataModule
from nemo_terminal.data.store import write_random_dataset
from nemo_terminal.errors import UserError
from nemo_terminal.runtime.parallel import ParallelConfig


def _dm(cfg, **kw) -> TerminalDataModule:
    args = dict(global_batch_size=4, micro_batch_size=1, dp_rank=0, dp_size=1, cp_rank=0, cp_size=1,
                required_pad_multiple=1, tokenizer_hash="test-tokenizer")
    args.update(kw)
    dm = TerminalDataModule(cfg, **args)
    dm.setup()
    return dm


def test_config_from_omegaconf_and_validation(tmp_path):
    yaml = OmegaConf.create({"datasets": [{"path": "a", "weight": 2.0}, {"path": "b", "weight": 1.0, "fraction": 0.1}],
                             "val_fraction": 0.02, "seed": 5})
    cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(DataConfig), yaml))
    assert isinstance(cfg, DataConfig) and cfg.datasets[1].fraction == 0.1 and cfg.seed == 5
    with pytest.raises(UserError, match="fraction"):
        OmegaConf.to_object(
            OmegaConf.merge(OmegaConf.structured(DataConfig), {"datasets": [{"path": "a", "fraction": 0}]})
        )
    with pytest.raises(UserError, match="give all or none"):
        DataConfig(datasets=[{"path": "a", "weight": 1.0}, {"path": "b"}])
    with pytest.raises(UserError, match="exactly one of samples or epochs"):
        DataConfig(stages=[{"datasets": ["a"]}])
    with pytest.raises(UserError, match="not both"):
        DataConfig(path="a", datasets=["b"])
    with pytest.raises(UserError, match="no training data"):
        DataConfig().resolved_stages()
    with pytest.raises(UserError, match="unknown data config keys"):
        TerminalDataModule({"pth": "a"}, global_batch_size=1, micro_batch_size=1, dp_rank=0, dp_size=1)


def test_mismatched_shards_are_refused_with_the_fix(tmp_path):
    ds = write_random_dataset(tmp_path / "ds", num_bins=8, seq_length=32, pad_multiple=2)
    with pytest.raises(UserError, match="tokenizer"):
        _dm(DataConfig(path=str(ds)), tokenizer_hash="another")
    need = ParallelConfig(tp=2, cp=2, sequence_parallel=True).pad_multiple()
    with pytest.raises(UserError, match="re-run prepare with --cp-size 2"):
        _dm(DataConfig(path=str(ds)), cp_size=2, required_pad_multiple=need)
    other = write_random_dataset(tmp_path / "other", num_bins=8, seq_length=64, pad_multiple=2)
    with pytest.raises(UserError, match="disagree on seq_length"):
        _dm(DataConfig(datasets=[str(ds), str(other)]))
    with pytest.raises(UserError, match="incomplete dataset"):
        (tmp_path / "empty").mkdir()
        _dm(DataConfig(path=str(tmp_path / "empty")))
    with pytest.raises(UserError, match="exceeds"):
        _dm(DataConfig(path=str(ds)), global_batch_size=16)
    assert _dm(DataConfig(path=str(ds)), cp_size=2, required_pad_multiple=2).seq_length == 32


def test_validation_split_is_held_out_and_shared_across_dp(tmp_path):
    ds = write_random_dataset(tmp_path / "ds", num_bins=40, seq_length=32)
    cfg = DataConfig(path=str(ds), val_fraction=0.25, num_workers=0)
    dm = _dm(cfg)
    assert dm.steps_per_epoch == 30 // 4
    train = {tuple(b["tokens"][0].tolist()) for _, b in zip(range(30), dm.train_dataloader(), strict=False)}
    val = [tuple(b["tokens"][0].tolist()) for b in dm.val_dataloader()]
    assert len(val) == 10 and len(train) == 30 and not train & set(val)
    shares = [[tuple(b["tokens"][0].tolist()) for b in _dm(cfg, dp_size=2, dp_rank=r, micro_batch_size=2,
                                                              global_batch_size=4).val_dataloader()] for r in (0, 1)]
    assert len(shares[0]) == len(shares[1]) == 2  # 10 bins / (mbs 2 * dp 2): tail of 2 dropped evenly
    sep = write_random_dataset(tmp_path / "val", num_bins=6, seq_length=32, seed=9)
    assert len(list(_dm(DataConfig(path=str(ds), val_path=str(sep), num_workers=0)).val_dataloader())) == 6


def test_finite_curriculum_ends(tmp_path):
    a = write_random_dataset(tmp_path / "a", num_bins=10, seq_length=16)
    b = write_random_dataset(tmp_path / "b", num_bins=6, seq_length=16, seed=1)
    cfg = DataConfig(stages=[{"datasets": [str(a)], "samples": 8}, {"datasets": [str(b)], "epochs": 1.5}],
                     num_workers=0)
    dm = _dm(cfg)
    assert dm.max_steps == dm.steps_per_epoch == 17 // 4
    batches = list(dm.train_dataloader())
    assert len(batches) == 16 and all(isinstance(x["tokens"], torch.Tensor) for x in batches)
    state = dm.state_dict()  # 17 samples, 4 steps of 4: the last partial step is dropped
    assert (state["stage"], state["epoch"], state["sample"], state["consumed_samples"]) == (1, 1, 2, 16)
