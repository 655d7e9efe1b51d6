"""Megatron-LM and Megatron-Bridge checkpoints, both ways.

Each test mirrors the upstream loader code it names, pinned to the commits read:
  Megatron-LM     NVIDIA/Megatron-LM@d98e8a64ddf34856e74b24714e3bedb2f5a39553, megatron/training/checkpointing.py
  Megatron-Bridge NVIDIA-NeMo/Megatron-Bridge@067f987df03b8355b03192d88d70f1709fedf51a,
                  src/megatron/bridge/training/checkpointing.py (+ utils/checkpoint_utils.py)
Where their code calls megatron-core (check_is_distributed_checkpoint, load_common_state_dict,
dist_checkpointing.load), the test calls the same megatron-core function; their own parsing
(tracker file, run_config.yaml) is restated here line for line, since neither package installs.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pytest
import torch

from nemo_terminal.cli import main
from nemo_terminal.testing import run_distributed

# Megatron-LM load_args_from_checkpoint (lines 2199-2370): the model args it copies from common.pt.
MLM_MODEL_ARGS = (
    "num_layers", "hidden_size", "ffn_hidden_size", "seq_length", "num_attention_heads", "num_query_groups",
    "group_query_attention", "kv_channels", "max_position_embeddings", "position_embedding_type",
    "add_position_embedding", "use_rotary_position_embeddings", "rotary_base", "rotary_percent",
    "rotary_interleaved", "add_bias_linear", "add_qkv_bias", "squared_relu", "swiglu",
    "untie_embeddings_and_output_weights", "apply_layernorm_1p", "normalization", "apply_query_key_layer_scaling",
    "attention_dropout", "hidden_dropout", "padded_vocab_size", "ckpt_format", "tensor_model_parallel_size",
    "pipeline_model_parallel_size",
)
# megatron-core get_gpt_layer_with_transformer_engine_spec(qk_layernorm=True): modules carrying TE extra state,
# written out here independently of nemo_terminal/checkpoint/te_extra_state.py.
TE_LAYER_MODULES = ("self_attention.linear_qkv", "self_attention.core_attention", "self_attention.linear_proj",
                    "self_attention.q_layernorm", "self_attention.k_layernorm", "mlp.linear_fc1", "mlp.linear_fc2")


def mlm_read_metadata(tracker: Path) -> tuple[int, bool]:
    """Megatron-LM read_metadata (lines 388-406): an int >= 0, or 'release' (iteration 0)."""
    text = tracker.read_text().strip()
    try:
        iteration, release = int(text), False
    except ValueError:
        assert text == "release", f"Megatron-LM would sys.exit on {text!r}"
        iteration, release = 0, True
    assert iteration > -1 or release
    return iteration, release


def bridge_read_metadata(tracker: Path) -> tuple[int, bool]:
    """Bridge read_metadata (lines 311-338): like Megatron-LM's but `assert iteration > 0 or release`."""
    text = tracker.read_text().strip()
    iteration, release = (0, True) if text == "release" else (int(text), False)
    assert iteration > 0 or release, f"Bridge asserts on tracker {text!r}"
    return iteration, release


def checkpoint_name(root: Path, iteration: int, release: bool) -> Path:
    """get_checkpoint_name(..., return_base_dir=True), both projects: 'release' or iter_{:07d}."""
    return root / ("release" if release else f"iter_{iteration:07d}")


@pytest.fixture(scope="module")
def imported(tmp_path_factory, tiny_tied_dir):
    meg = tmp_path_factory.mktemp("imported") / "meg"
    assert main(["import", "--hf-dir", str(tiny_tied_dir), "--out", str(meg), "--dtype", "fp32"]) == 0
    return meg


def test_import_has_what_megatron_lm_and_bridge_read(imported, tiny_tied_dir):
    import yaml
    from megatron.core import dist_checkpointing

    from nemo_terminal.models.qwen3 import Qwen3Config

    tracker = imported / "latest_checkpointed_iteration.txt"
    # Megatron-LM _load_base_checkpoint (2022-2023, 2070) and Bridge _resolve_checkpoint_iteration (3438-3441).
    it, release = mlm_read_metadata(tracker)
    assert (it, release) == bridge_read_metadata(tracker) == (0, True)  # 'iter 0' would fail Bridge's assert
    ckpt = checkpoint_name(imported, it, release)
    # Megatron-LM _get_checkpoint_format (1981) and Bridge _get_checkpoint_format (265): torch_dist.
    assert dist_checkpointing.check_is_distributed_checkpoint(str(ckpt))
    # Megatron-LM _load_global_dist_base_checkpoint rank0 path (1918-1921): common state, then
    # load_args_from_checkpoint reads state_dict['args'] and ['iteration'] (2231-2233).
    common = dist_checkpointing.load_common_state_dict(str(ckpt))
    args, hf = common["args"], Qwen3Config.from_hf_dir(tiny_tied_dir)
    assert isinstance(args, argparse.Namespace) and common["iteration"] == 0 and common["checkpoint_version"] == 3.0
    missing = [a for a in MLM_MODEL_ARGS if getattr(args, a, None) is None and a != "position_embedding_type"]
    assert not missing, missing
    assert (args.num_layers, args.hidden_size, args.ffn_hidden_size, args.num_attention_heads, args.num_query_groups,
            args.kv_channels, args.padded_vocab_size, args.rotary_base, args.norm_epsilon) == (
        hf.num_hidden_layers, hf.hidden_size, hf.intermediate_size, hf.num_attention_heads, hf.num_key_value_heads,
        hf.head_dim, hf.vocab_size, hf.rope_theta, hf.rms_norm_eps)
    assert args.untie_embeddings_and_output_weights is (not hf.tie_word_embeddings) and args.swiglu
    # Bridge _load_checkpoint_from_path (2812-2815, 2831-2832, 2847, 2875, 2885): run_config.yaml in the iteration.
    run_cfg = yaml.safe_load((ckpt / "run_config.yaml").read_text())
    assert (run_cfg["model"]["tensor_model_parallel_size"], run_cfg["model"]["pipeline_model_parallel_size"]) == (1, 1)
    assert {"save_rng", "save_optim", "fully_parallel_save"} <= set(run_cfg["checkpoint"])
    # Our own readers: `latest` names the same directory.
    assert (imported / "latest").read_text().strip() == "release"


def te_template_load(meg: str, with_te_keys: bool) -> str:
    """Load the checkpoint with a template shaped like a TE-spec GPTModel's, under default strictness."""
    from megatron.core import dist_checkpointing
    from megatron.core.dist_checkpointing.mapping import ShardedObject

    from nemo_terminal.checkpoint import save_load
    from nemo_terminal.checkpoint.source import open_checkpoint
    from nemo_terminal.convert.verify import build_stage
    from nemo_terminal.runtime.distributed import init_parallel_state
    from nemo_terminal.runtime.parallel import ParallelConfig

    src = open_checkpoint(meg)
    init_parallel_state(ParallelConfig())
    model = build_stage(src.cfg, 1, 1)
    template = {"model": model.sharded_state_dict()}
    n = src.cfg.num_hidden_layers
    if with_te_keys:  # built by hand: what make_sharded_object_for_checkpoint gives each TE module
        template["model"] = {k: v for k, v in template["model"].items() if not k.endswith("_extra_state")}
        for m in TE_LAYER_MODULES:
            for i in range(n):
                obj = ShardedObject(f"decoder.layers.{m}._extra_state", None, (n,), (i,), replica_id=(0, 0, 0))
                template["model"][f"{m}.{i}._extra_state"] = obj
        template["model"]["decoder.final_layernorm._extra_state"] = ShardedObject(
            "decoder.final_layernorm._extra_state", None, (1,), (0,), replica_id=(0, 0, 0))
    try:
        loaded = dist_checkpointing.load(template, str(src.iter_dir))  # default strict: assume_ok_unexpected
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as err:  # noqa: BLE001 - torch's CheckpointException is a BaseException
        return f"failed: {type(err).__name__}: {str(err)[-400:]}"  # the cause is at the end
    got = loaded["model"]["embedding.word_embeddings.weight"]
    save_load.load_model_weights([model], src.iter_dir)
    same = torch.equal(got, model.embedding.word_embeddings.weight.detach())
    return "ok" if same else "loaded different weights"


@pytest.mark.dist
def test_te_spec_template_loads_cpu_checkpoint_under_default_strictness(imported, tmp_path):
    ok, failed = run_distributed(_two_loads, world_size=1, new=str(imported), old=str(tmp_path / "plain"))[0]
    assert ok == "ok"
    # A plain local-spec save (what a CPU checkpoint was before) fails the same load: the test can fail.
    assert failed.startswith("failed") and "Missing key" in failed and "core_attention._extra_state" in failed, failed


def _two_loads(new: str, old: str) -> tuple[str, str]:
    """Our import, and the same weights saved by megatron-core from the local-spec model alone."""
    from megatron.core import dist_checkpointing

    from nemo_terminal.checkpoint import save_load
    from nemo_terminal.checkpoint.source import open_checkpoint
    from nemo_terminal.convert.verify import build_stage
    from nemo_terminal.runtime.distributed import init_parallel_state
    from nemo_terminal.runtime.parallel import ParallelConfig

    result = te_template_load(new, True)
    src = open_checkpoint(new)
    init_parallel_state(ParallelConfig())
    model = build_stage(src.cfg, 1, 1)
    save_load.load_model_weights([model], src.iter_dir)
    (Path(old) / "release").mkdir(parents=True)
    dist_checkpointing.save({"model": model.sharded_state_dict()}, str(Path(old) / "release"))
    shutil.copy(Path(new) / "model_config.json", Path(old) / "model_config.json")
    (Path(old) / "latest").write_text("release\n")
    return result, te_template_load(old, True)


# -- what they write, we read ---------------------------------------------------------------------


def save_foreign(meg: str, mlm: str, bridge: str) -> None:
    """Save the imported weights as Megatron-LM's and Bridge's save_checkpoint lay them out:
    generate_state_dict (Megatron-LM 1556-1600) {args, checkpoint_version, iteration, model}, the
    tracker file (1084), and for Bridge run_config.yaml + latest_train_state.pt (Bridge 1455-1495)."""
    import yaml
    from megatron.core import dist_checkpointing

    from nemo_terminal.checkpoint import directory as cio
    from nemo_terminal.checkpoint import megatron_lm, save_load
    from nemo_terminal.checkpoint.source import open_checkpoint
    from nemo_terminal.convert.verify import build_stage
    from nemo_terminal.runtime.distributed import init_parallel_state
    from nemo_terminal.runtime.parallel import ParallelConfig

    src = open_checkpoint(meg)
    init_parallel_state(ParallelConfig())
    model = build_stage(src.cfg, 1, 1)
    save_load.load_model_weights([model], src.iter_dir)
    args = megatron_lm.megatron_lm_args(src.cfg, iteration=100)
    args.params_dtype = torch.float32
    for root, step in ((Path(mlm), 100), (Path(bridge), 50)):
        it = root / f"iter_{step:07d}"
        it.mkdir(parents=True)
        state = {"model": model.sharded_state_dict(), "checkpoint_version": 3.0, "iteration": step}
        if root == Path(mlm):
            state["args"] = args
        dist_checkpointing.save(state, str(it))
    (Path(mlm) / "latest_checkpointed_iteration.txt").write_text("100")
    # Bridge: run_config.yaml as its to_yaml writes it (`_target_` entries), tokenizer/ in the iteration,
    # and only latest_train_state.pt as the tracker (the .txt is optional for Bridge's own reader).
    run_cfg = megatron_lm.run_config(src.cfg)
    run_cfg["model"]["_target_"] = "megatron.bridge.models.qwen.qwen_provider.Qwen3ModelProvider"
    run_cfg["model"]["init_method"] = {"_target_": "os.system", "_args_": [f"touch {bridge}/PWNED"]}
    (Path(bridge) / "iter_0000050" / "run_config.yaml").write_text(yaml.safe_dump(run_cfg))
    cio.copy_tokenizer(src.tokenizer, Path(bridge) / "iter_0000050" / "tokenizer")
    torch.save({"step": torch.tensor(50, dtype=torch.int64)}, Path(bridge) / "latest_train_state.pt")


def _hf_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    out = {}
    for f in sorted(path.glob("*.safetensors")):
        out.update(load_file(f))
    return out


@pytest.mark.dist
def test_megatron_lm_and_bridge_layouts_export_bit_exactly(imported, tiny_tied_dir, tmp_path, capsys):
    mlm, bridge = tmp_path / "mlm", tmp_path / "bridge"
    run_distributed(save_foreign, world_size=1, meg=str(imported), mlm=str(mlm), bridge=str(bridge))
    src = _hf_tensors(tiny_tied_dir)
    # Megatron-LM: no tokenizer inside, so export names --tokenizer; with it, bit-exact.
    assert main(["export", "--megatron-dir", str(mlm), "--out", str(tmp_path / "o1")]) == 1
    assert "--tokenizer" in capsys.readouterr().err
    assert main(["export", "--megatron-dir", str(mlm), "--out", str(tmp_path / "o1"),
                 "--tokenizer", str(imported / "tokenizer")]) == 0
    # Bridge: shape from run_config.yaml (its `_target_` never run), tokenizer from the iteration.
    assert main(["export", "--megatron-dir", str(bridge), "--out", str(tmp_path / "o2")]) == 0
    assert not (bridge / "PWNED").exists()
    for out in (tmp_path / "o1", tmp_path / "o2"):
        got = _hf_tensors(out)
        assert got.keys() == src.keys() - {"lm_head.weight"} or got.keys() == src.keys()
        assert all(torch.equal(src[k], got[k]) for k in got)
        cfg = json.loads((out / "config.json").read_text())
        assert cfg["tie_word_embeddings"] is True and cfg["num_hidden_layers"] == 2
    capsys.readouterr()
    # verify reads both layouts (prompts tokenized with the HF directory's tokenizer when none is inside).
    for meg in (mlm, bridge):
        assert main(["verify", "--hf-dir", str(tiny_tied_dir), "--megatron-dir", str(meg), "--atol", "1e-4"]) == 0


def test_older_layout_and_refusals(imported, tmp_path, capsys):
    # What this project wrote before: iter_0000000 + `latest`, no tracker file.
    old = tmp_path / "old"
    shutil.copytree(imported, old)
    (old / "release").rename(old / "iter_0000000")
    (old / "latest").write_text("iter_0000000\n")
    (old / "latest_checkpointed_iteration.txt").unlink()
    assert main(["export", "--megatron-dir", str(old), "--out", str(tmp_path / "o")]) == 0
    # A Megatron-LM checkpoint of another architecture is refused naming the arg.
    from nemo_terminal.checkpoint import megatron_lm
    from nemo_terminal.checkpoint.source import config_from_args, config_from_run_config
    from nemo_terminal.errors import UserError
    from nemo_terminal.models.qwen3 import Qwen3Config

    cfg = Qwen3Config.from_json_file(imported / "model_config.json")
    args = megatron_lm.megatron_lm_args(cfg)
    assert config_from_args(args, "x").num_hidden_layers == cfg.num_hidden_layers
    args.num_experts = 8
    with pytest.raises(UserError, match="num_experts=8"):
        config_from_args(args, "common.pt args")
    run_cfg = megatron_lm.run_config(cfg)
    run_cfg["model"]["activation_func"] = {"_target_": "torch.nn.functional.gelu", "_call_": False}
    with pytest.raises(UserError, match="model.activation_func='torch.nn.functional.gelu'"):
        config_from_run_config(run_cfg, "run_config.yaml")
