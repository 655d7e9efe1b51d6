"""The data module on real gloo ranks (world size 2): DP split, CP split, resume, mixtures, fractions.

Each rank builds its own module, as under torchrun; ranks exchange what they saw with gloo
collectives and the parent compares against an unsplit (dp=1 / cp=1) reference.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import torch.distributed as dist

from nemo_terminal.data.loader.config import DataConfig
from nemo_terminal.data.loader.module import TerminalDataModule
from nemo_terminal.data.store import write_random_dataset
from nemo_terminal.errors import UserError
from nemo_terminal.runtime.context_parallel import zigzag_indices
from nemo_terminal.testing import run_distributed

pytestmark = pytest.mark.dist


def _dm(cfg: dict, gbs: int, mbs: int, dp_rank: int = 0, dp_size: int = 1, cp_rank: int = 0, cp_size: int = 1,
        **over) -> TerminalDataModule:
    dm = TerminalDataModule(DataConfig(**{**cfg, **over}), global_batch_size=gbs, micro_batch_size=mbs,
                            dp_rank=dp_rank, dp_size=dp_size, cp_rank=cp_rank, cp_size=cp_size,
                            required_pad_multiple=2 * cp_size if cp_size > 1 else 1, tokenizer_hash="test-tokenizer")
    dm.setup()
    return dm


def _bin_ids(dm: TerminalDataModule) -> dict[bytes, tuple[int, int]]:
    """Identify bins by content: a bin's tokens padded to seq_length -> (dataset, bin)."""
    table = {}
    for d, ds in enumerate(dm.datasets):
        for b in range(len(ds)):
            row = np.full(dm.seq_length, ds.pad_id, dtype=np.int64)
            row[:len(ds.bin(b).tokens)] = ds.bin(b).tokens
            table[row.tobytes()] = (d, b)
    assert len(table) == sum(len(ds) for ds in dm.datasets)
    return table


def _ids(batch: dict, table: dict, seq: int) -> list[tuple[int, int]]:
    rows = batch["tokens"][0].numpy().reshape(-1, seq)
    return [table[r.tobytes()] for r in rows]


def _take(dm: TerminalDataModule, n: int, it=None) -> list[dict]:
    it = it if it is not None else dm.train_dataloader()
    return [next(it) for _ in range(n)]


def _gather(obj) -> list:
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def _dp_epoch(cfg: dict) -> dict:
    rank, world = dist.get_rank(), dist.get_world_size()
    dm = _dm(cfg, gbs=8, mbs=2, dp_rank=rank, dp_size=world, num_workers=2)
    table = _bin_ids(dm)
    per_step = dm.micro_batches_per_step
    batches = _take(dm, dm.steps_per_epoch * per_step)
    mine = [_ids(b, table, dm.seq_length) for b in batches]
    step_tokens = torch.tensor([sum(b["num_loss_tokens"] for b in batches[s * per_step:(s + 1) * per_step])
                                for s in range(dm.steps_per_epoch)])
    dist.all_reduce(step_tokens)  # the global loss-token count the trainer normalizes by
    ref = _dm(cfg, gbs=8, mbs=4, num_workers=0)  # dp=1, another micro-batch size
    ref_batches = _take(ref, ref.steps_per_epoch * ref.micro_batches_per_step)
    ref_tokens = [sum(b["num_loss_tokens"] for b in ref_batches[s * 2:(s + 1) * 2]) for s in range(ref.steps_per_epoch)]
    return dict(mine=_gather(mine), ref=[_ids(b, table, ref.seq_length) for b in ref_batches],
                step_tokens=step_tokens.tolist(), ref_tokens=ref_tokens, per_step=per_step,
                train=sorted(table.values()), steps=dm.steps_per_epoch)


def test_dp_shards_are_disjoint_cover_the_epoch_and_match_any_dp_size(tmp_path):
    a = write_random_dataset(tmp_path / "a", num_bins=20, seq_length=32, seed=1)
    b = write_random_dataset(tmp_path / "b", num_bins=12, seq_length=32, seed=2)
    r0, r1 = run_distributed(_dp_epoch, cfg={"datasets": [str(a), str(b)]})
    assert r0["mine"] == r1["mine"]  # both ranks saw the same gather
    ranks = [[i for mb in rank for i in mb] for rank in r0["mine"]]
    assert not set(ranks[0]) & set(ranks[1]) and len(ranks[0]) == len(ranks[1]) == 16
    assert sorted(ranks[0] + ranks[1]) == r0["train"]  # the union is exactly one epoch of both datasets
    per = r0["per_step"]
    ref = [i for mb in r0["ref"] for i in mb]
    for s in range(r0["steps"]):  # step s holds the same bins at dp=2/mbs=2 as at dp=1/mbs=4
        got = {i for rank in r0["mine"] for mb in rank[s * per:(s + 1) * per] for i in mb}
        assert got == set(ref[s * 8:(s + 1) * 8])
    assert r0["step_tokens"] == r1["step_tokens"] == r0["ref_tokens"]


def _cp_shares(cfg: dict) -> dict:
    rank = dist.get_rank()
    dm = _dm(cfg, gbs=4, mbs=2, cp_rank=rank, cp_size=2, num_workers=1)
    shares = _gather(_take(dm, 4))
    ref = _take(_dm(cfg, gbs=4, mbs=2, num_workers=0), 4)
    rebuilt = []
    for i in range(4):
        full = {}
        for key in ("tokens", "labels", "loss_mask", "position_ids"):
            t = torch.full_like(ref[i][key][0], -1)
            for r, share in enumerate(shares):
                t[zigzag_indices(share[i]["cu_seqlens_padded"], 2, r)] = share[i][key][0]
            full[key] = t
        rebuilt.append(full)
    return dict(rebuilt=rebuilt, ref=ref, shares=shares)


def test_cp_shares_reassemble_to_the_bin(tmp_path):
    ds = write_random_dataset(tmp_path / "ds", num_bins=16, seq_length=64, pad_multiple=4, max_doc=40)
    out = run_distributed(_cp_shares, cfg={"path": str(ds)})
    for rank in out:
        for full, ref, i in zip(rank["rebuilt"], rank["ref"], range(4), strict=False):
            for key, t in full.items():
                assert torch.equal(t, ref[key][0]), key
            for key in ("cu_seqlens", "cu_seqlens_padded"):
                assert all(torch.equal(s[i][key], ref[key]) for s in rank["shares"])
            assert sum(s[i]["num_loss_tokens"] for s in rank["shares"]) == ref["num_loss_tokens"]
            assert all(s[i]["tokens"].shape == (1, 64) for s in rank["shares"])


def _roundtrip(state: dict) -> dict:
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def _resume(cfg: dict) -> dict:
    rank, world = dist.get_rank(), dist.get_world_size()
    kw = dict(gbs=8, mbs=2, dp_rank=rank, dp_size=world)
    full = _take(_dm(cfg, **kw, num_workers=0), 14)  # 7 steps: crosses the 20-bin epoch boundary
    first = _dm(cfg, **kw, num_workers=2)
    _take(first, 5)  # mid-step (2 micro-batches per step)
    resumed = TerminalDataModule(DataConfig(**cfg, num_workers=1), global_batch_size=8, micro_batch_size=2,
                                 dp_rank=rank, dp_size=world, tokenizer_hash="test-tokenizer")
    resumed.load_state_dict(_roundtrip(first.state_dict()))  # before setup: applied by setup
    resumed.setup()
    rest = _take(resumed, 9)
    same = all(all(torch.equal(torch.as_tensor(a[k]), torch.as_tensor(b[k])) for k in a)
               for a, b in zip(full[5:], rest, strict=False))
    # At a step boundary the state loads at another DP size and continues with the same global batches.
    boundary = _dm(cfg, **kw)
    _take(boundary, 6)
    state = _roundtrip(boundary.state_dict())
    single = _dm(cfg, gbs=8, mbs=4)
    single.load_state_dict(state)
    table = _bin_ids(single)
    single_ids = [
        sorted(_ids(b, table, 32) + _ids(c, table, 32)) for b, c in zip(*[iter(_take(single, 4))] * 2, strict=False)
    ]
    dp_ids = _gather([_ids(b, table, 32) for b in full[6:10]])
    expect = [sorted(i for r in dp_ids for mb in r[2 * s:2 * s + 2] for i in mb) for s in range(2)]
    mid = _roundtrip(first.state_dict())
    try:
        other = _dm(cfg, gbs=8, mbs=4)
        other.load_state_dict(mid)
        error = ""
    except UserError as e:
        error = str(e)
    return dict(same=same, n=len(rest), state=mid, single=single_ids, expect=expect, error=error)


def test_resume_continues_batch_for_batch(tmp_path):
    ds = write_random_dataset(tmp_path / "ds", num_bins=20, seq_length=32, seed=4)
    for r in run_distributed(_resume, cfg={"path": str(ds)}):
        assert r["same"] and r["n"] == 9
        assert r["single"] == r["expect"]
        assert "mid-step" in r["error"]
        s = r["state"]
        assert (s["consumed_samples"], s["micro_in_step"], s["epoch"], s["sample"]) == (16, 1, 0, 16)
        assert all(isinstance(v, (int, str, list)) for v in s.values())


def _draws(cfgs: dict) -> dict:
    rank, world = dist.get_rank(), dist.get_world_size()
    out = {}
    for name, (cfg, steps) in cfgs.items():
        dm = _dm(cfg, gbs=8, mbs=2, dp_rank=rank, dp_size=world, num_workers=0)
        table = _bin_ids(dm)
        n = dm.micro_batches_per_step * (steps or dm.steps_per_epoch)
        batches = list(dm.train_dataloader()) if steps is None and dm.max_steps else _take(dm, n)
        mine = [[(dm.datasets[d].path.name, b) for d, b in _ids(x, table, dm.seq_length)] for x in batches]
        out[name] = _gather(mine)
    return out


def test_mixture_curriculum_and_fractions(tmp_path):
    a = str(write_random_dataset(tmp_path / "a", num_bins=40, seq_length=16, seed=5))
    b = str(write_random_dataset(tmp_path / "b", num_bins=10, seq_length=16, seed=6))
    big = str(write_random_dataset(tmp_path / "big", num_bins=400, seq_length=16, seed=7))
    cfgs = {
        "mix": ({"datasets": [{"path": a, "weight": 1.0}, {"path": b, "weight": 3.0}]}, 250),
        "curriculum": ({"stages": [{"datasets": [b], "samples": 16}, {"datasets": [a], "epochs": 1}]}, None),
        **{f"f{f}": ({"datasets": [{"path": big, "fraction": f}], "seed": 11}, None) for f in (0.02, 0.1, 1.0)},
        "f0.1again": ({"datasets": [{"path": big, "fraction": 0.1}], "seed": 11}, None),
    }
    r0, r1 = run_distributed(_draws, cfgs=cfgs)
    assert r0 == r1

    def flat(name):  # global sample order: step by step, rank 0's slice then rank 1's
        ranks = r0[name]
        per = len(ranks[0])
        return [i for s in range(0, per, 2) for r in ranks for mb in r[s:s + 2] for i in mb]

    mix = flat("mix")
    share_b = np.mean([n == "b" for n, _ in mix])
    assert len(mix) == 2000 and abs(share_b - 0.75) < 4 * np.sqrt(0.75 * 0.25 / 2000)
    cur = flat("curriculum")
    assert len(cur) == 56 and {n for n, _ in cur[:16]} == {"b"} and {n for n, _ in cur[16:]} == {"a"}
    assert sorted(bin_ for _, bin_ in cur[16:56]) == list(range(40))
    sets = {f: set(flat(f"f{f}")) for f in (0.02, 0.1, 1.0)}
    assert [len(s) for s in sets.values()] == [8, 40, 400]
    assert sets[0.02] < sets[0.1] < sets[1.0] and set(flat("f0.1again")) == sets[0.1]
