"""Configs: one layout, one set of enums, every number checked before any work naming the field (issues 12, 14 #9)."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import json
import textwrap
from pathlib import Path

import pytest

from nemo_terminal.cli import main
from nemo_terminal.data.loader.config import DataConfig
from nemo_terminal.data.pipeline.config import PrepareConfig, load_prepare_config
from nemo_terminal.errors import UserError
from nemo_terminal.options import Precision
from nemo_terminal.training.config import Config, load_config, to_yaml

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
RECIPE = CONFIGS / "tiny_cpu.yaml"
PATHS = ["model.megatron_dir=m", "data.path=d"]


@pytest.mark.parametrize("override, field", [
    ("log.interval=0", "log.interval"),
    ("train.lr=-1e-5", "train.lr"), ("train.lr=nan", "train.lr"), ("train.lr=inf", "train.lr"),
    ("train.lr=0", "train.lr"),
    ("train.min_lr=-1", "train.min_lr"), ("train.min_lr=1", "train.min_lr"), ("train.min_lr=nan", "train.min_lr"),
    ("train.weight_decay=-0.1", "train.weight_decay"), ("train.weight_decay=nan", "train.weight_decay"),
    ("train.adam_beta1=1.0", "train.adam_beta1"), ("train.adam_beta1=-0.1", "train.adam_beta1"),
    ("train.adam_beta2=1.5", "train.adam_beta2"), ("train.adam_eps=0", "train.adam_eps"),
    ("train.clip_grad=-1", "train.clip_grad"), ("train.clip_grad=inf", "train.clip_grad"),
    ("train.max_consecutive_skips=0", "train.max_consecutive_skips"),
    ("train.max_steps=0", "train.max_steps"), ("train.max_steps=-3", "train.max_steps"),
    ("train.epochs=nan", "train.epochs"), ("train.warmup_fraction=1", "train.warmup_fraction"),
    ("train.seed=-1", "train.seed"), ("train.eval_interval=-1", "train.eval_interval"),
    ("train.global_batch_size=0", "train.global_batch_size"), ("train.micro_batch_size=0", "train.micro_batch_size"),
    ("train.precision=fp8", "train.precision"), ("train.recompute=some", "train.recompute"),
    ("model.attention_backend=flash", "model.attention_backend"), ("model.yarn_factor=nan", "model.yarn_factor"),
    ("model.yarn_factor=0.5", "model.yarn_factor"), ("model.size=70b", "model.size"),
    ("checkpoint.save_interval=-1", "checkpoint.save_interval"), ("checkpoint.keep_last=0", "checkpoint.keep_last"),
    ("parallel.tp=0", "parallel.tp"), ("parallel.cp=-2", "parallel.cp"),
    ("data.seed=-1", "data.seed"), ("data.seq_length=0", "data.seq_length"),
    ("data.val_fraction=nan", "data.val_fraction"),
])
def test_training_config_names_the_field(override, field):
    with pytest.raises(UserError) as err:
        load_config(RECIPE, PATHS + [override])
    assert field in str(err.value) and len(str(err.value).splitlines()) == 1


@pytest.mark.parametrize("override, field", [
    ("seed=-1", "seed"), ("seq_length=0", "seq_length"), ("fraction=0", "fraction"), ("fraction=nan", "fraction"),
    ("workers=0", "workers"), ("chunk_size=0", "chunk_size"), ("shuffle_window=0", "shuffle_window"),
    ("thinking=sometimes", "thinking"), ("length_policy=cut", "length_policy"),
    ("parallel.tp=0", "parallel.tp"), ("filters.min_turns=0", "filters.min_turns"),
])
def test_prepare_config_names_the_field(override, field):
    with pytest.raises(UserError) as err:
        load_prepare_config(None, [override], seq_length=None if "seq_length" in override else 4096)
    assert field in str(err.value)


@pytest.mark.parametrize("argv, flag", [
    (["prepare", "--input", "x.jsonl", "--tokenizer", "t", "--out", "o", "--seq-length", "1024", "--seed", "-1"],
     "seed"),
    (["prepare", "--input", "x.jsonl", "--tokenizer", "t", "--out", "o", "--seq-length", "1024", "--workers", "0"],
     "workers"),
    (["export", "--megatron-dir", "m", "--out", "o", "--max-shard-gb", "0"], "--max-shard-gb"),
    (["plan", "--config", str(RECIPE), "--model-size", "0.6b", "--seq-length", "2048", "--num-gpus", "0"],
     "--num-gpus"),
    (["tiny-model", "--out", "o", "--num-layers", "0"], "--num-layers"),
    (["verify", "--hf-dir", ".", "--megatron-dir", ".", "--atol", "-1"], "--atol"),
])
def test_cli_numbers_fail_before_any_work(argv, flag, capsys):
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and flag in err and len(err.splitlines()) == 1, err


def test_enums_validate_and_read_as_plain_strings():
    cfg = load_config(RECIPE, PATHS + ["train.precision=bf16"])
    assert cfg.train.precision is Precision.bf16 and cfg.train.precision == "bf16"
    assert f"{cfg.train.precision}" == "bf16"
    assert "precision: bf16" in to_yaml(cfg) and "recompute: none" in to_yaml(cfg)
    prep = load_prepare_config(None, ["thinking=drop"], seq_length=4096)
    stored = json.loads(json.dumps(prep.to_dict()))
    assert stored["thinking"] == "drop" and stored["length_policy"] == "truncate_turns"
    with pytest.raises(UserError, match=r"thinking must be one of \('keep', 'strip_history', 'drop'\)"):
        PrepareConfig(thinking="sometimes")


def test_prepare_takes_the_training_parallel_block_and_the_cli_aliases():
    cfg = load_prepare_config(None, ["parallel.cp=2", "parallel.tp=2", "parallel.sequence_parallel=true"],
                              seq_length=4096)
    assert (cfg.parallel.tp, cfg.parallel.cp, cfg.pad_multiple()) == (2, 2, 4)
    train_keys = {f.name for f in dataclasses.fields(Config().parallel)}
    assert {f.name for f in dataclasses.fields(cfg.parallel)} == train_keys  # the same block, same keys


def test_prepare_cli_aliases_set_the_parallel_block(capsys):
    argv = ["prepare", "--input", "x.jsonl", "--tokenizer", "t", "--out", "o", "--seq-length", "1030",
            "--tp-size", "4", "--cp-size", "2", "--sequence-parallel"]
    assert main(argv) == 1  # the layout is read before any input: 1030 is no multiple of lcm(4, 8)
    err = capsys.readouterr().err
    assert "pad multiple 8 (parallel.cp=2, parallel.tp=4, parallel.sequence_parallel=True)" in err


def test_a_manifest_from_before_the_parallel_block_still_loads_and_matches(tokenizer_dir, tmp_path):
    from nemo_terminal.data.pipeline.prepare import prepare_dataset
    from nemo_terminal.data.pipeline.synthetic import write_jsonl
    from nemo_terminal.data.store import PackedDataset

    corpus = write_jsonl(tmp_path / "c.jsonl", 4, seed=0)
    out = tmp_path / "ds"
    cfg = PrepareConfig(seq_length=1024, progress=False, parallel={"cp": 2})
    prepare_dataset([str(corpus)], tokenizer_dir, out, cfg)
    manifest = json.loads((out / "manifest.json").read_text())
    old = dict(manifest["config"])
    old.pop("parallel")
    old.update(tp_size=1, cp_size=2, sequence_parallel=False)  # the layout keys of earlier versions
    manifest["config"] = old
    (out / "manifest.json").write_text(json.dumps(manifest))
    stamp = (out / "manifest.json").stat().st_mtime_ns
    assert len(PackedDataset(out)) > 0
    prepare_dataset([str(corpus)], tokenizer_dir, out, cfg)  # same settings: a no-op, not a mismatch
    assert (out / "manifest.json").stat().st_mtime_ns == stamp
    with pytest.raises(UserError, match="other inputs, tokenizer or settings"):
        prepare_dataset([str(corpus)], tokenizer_dir, out, PrepareConfig(seq_length=1024, progress=False))


def test_the_micro_batch_check_is_one_check():
    from nemo_terminal.data.loader.module import TerminalDataModule
    from nemo_terminal.training.config import TrainConfig

    with pytest.raises(UserError) as a:
        TrainConfig(global_batch_size=6, micro_batch_size=4).micro_batches_per_step(1)
    with pytest.raises(UserError) as b:
        TerminalDataModule(DataConfig(path="x"), global_batch_size=6, micro_batch_size=4, dp_rank=0, dp_size=1)
    assert str(a.value) == str(b.value) and "train.global_batch_size=6" in str(a.value)


def test_default_stage_is_a_real_stage_and_curriculum_stages_need_a_length():
    (stage,) = DataConfig(path="x").resolved_stages()
    assert not stage.bounded and stage.datasets[0].path == "x"
    with pytest.raises(UserError, match="exactly one of samples or epochs"):
        DataConfig(stages=[{"datasets": ["x"]}])
    with pytest.raises(UserError, match="exactly one of samples or epochs"):
        DataConfig(stages=[{"datasets": ["x"], "samples": 3, "epochs": 1.0}])


def test_data_seq_length_must_match_the_prepared_data(tmp_path):
    from nemo_terminal.data.loader.module import TerminalDataModule
    from nemo_terminal.data.store import write_random_dataset

    ds = write_random_dataset(tmp_path / "ds", num_bins=8, seq_length=64)
    dm = TerminalDataModule(DataConfig(path=str(ds), seq_length=128, num_workers=0), global_batch_size=2,
                            micro_batch_size=1, dp_rank=0, dp_size=1)
    with pytest.raises(UserError, match="data.seq_length=128.*--seq-length 64"):
        dm.setup()


def test_plan_reads_model_and_length_from_the_config_never_the_file_name(tmp_path, capsys):
    recipe = (CONFIGS / "qwen3_8b_terminal_sft_32k.yaml").read_text()
    renamed = tmp_path / "my_run.yaml"
    renamed.write_text(recipe)
    assert main(["plan", "--config", str(renamed), "--num-gpus", "32"]) == 0
    out = capsys.readouterr().out
    assert "model.size" in out and "seq_length 32768 (data.seq_length)" in out
    # A file name that merely looks like a size is not read.
    named = tmp_path / "qwen3_32b_terminal_sft_64k.yaml"
    named.write_text(RECIPE.read_text())
    assert main(["plan", "--config", str(named)]) == 1
    assert "--model-size" in capsys.readouterr().err
    # model.size must agree with the checkpoint when both are known.
    meg = tmp_path / "meg"
    meg.mkdir()
    from nemo_terminal.models.qwen3 import qwen3_size

    (meg / "model_config.json").write_text(json.dumps(qwen3_size("0.6b").to_hf_dict()))
    assert main(["plan", "--config", str(renamed), f"model.megatron_dir={meg}", "--num-gpus", "32"]) == 1
    assert "model.size=8b disagrees" in capsys.readouterr().err


def _undocumented(cls) -> list[str]:
    """Fields of a dataclass with no docstring right below them in the source."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body
    missing = []
    for i, node in enumerate(body):
        if isinstance(node, ast.AnnAssign):
            nxt = body[i + 1] if i + 1 < len(body) else None
            if not (isinstance(nxt, ast.Expr) and isinstance(getattr(nxt, "value", None), ast.Constant)
                    and isinstance(nxt.value.value, str)):
                missing.append(f"{cls.__name__}.{node.target.id}")
    return missing


def _all_config_classes(root) -> list[type]:
    seen, todo = [], [root]
    while todo:
        cls = todo.pop()
        if cls in seen:
            continue
        seen.append(cls)
        for f in dataclasses.fields(cls):
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else None
            if dataclasses.is_dataclass(default):
                todo.append(type(default))
    return seen


def test_every_config_field_is_documented():
    from nemo_terminal.data.loader.config import DatasetSpec, StageSpec

    classes = _all_config_classes(Config) + _all_config_classes(PrepareConfig) + [DatasetSpec, StageSpec]
    missing = [name for cls in classes for name in _undocumented(cls)]
    assert not missing, f"fields without a docstring: {missing}"
