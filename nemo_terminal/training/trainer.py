"""The one trainer: SFT of Qwen3 on megatron-core, identical on one CPU process and on many GPUs.

Flow: validate layout → parallel state → model chunks (DDP) → distributed
optimizer + cosine schedule → data module → resume → loop of
forward_backward_func steps with per-token loss → atomic checkpoints.
"""

from __future__ import annotations

import itertools
import logging
import math
import subprocess
import sys
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from megatron.core import parallel_state as ps
from megatron.core.dist_checkpointing.dict_utils import nested_values
from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig, finalize_model_grads
from megatron.core.pipeline_parallel import get_forward_backward_func

from nemo_terminal.checkpoint import directory as cio
from nemo_terminal.checkpoint import megatron_lm
from nemo_terminal.checkpoint import save_load as checkpoint
from nemo_terminal.checkpoint.preload import check_before_load
from nemo_terminal.checkpoint.source import CheckpointSource, open_checkpoint
from nemo_terminal.checkpoint.te_extra_state import missing_extra_state
from nemo_terminal.data.loader.batches import packed_seq_params
from nemo_terminal.data.loader.module import TerminalDataModule
from nemo_terminal.errors import UserError
from nemo_terminal.models.provider import build_gpt_model, resolve_attention_backend, to_transformer_config
from nemo_terminal.models.qwen3 import Qwen3Config, rope_kwargs
from nemo_terminal.models.tokenizer import tokenizer_hash
from nemo_terminal.runtime.device import current_device
from nemo_terminal.runtime.distributed import init_distributed, init_parallel_state, is_rank0
from nemo_terminal.runtime.launch import launch_rank, single_process_env
from nemo_terminal.training import performance
from nemo_terminal.training.config import Config, check_run_paths, to_yaml
from nemo_terminal.training.loss import masked_token_loss
from nemo_terminal.training.metrics import MetricsLogger, flops_per_step
from nemo_terminal.training.optimizer import (
    build_optimizer,
    build_scheduler,
    init_torch_adam_state,
    step_if_finite,
    uses_torch_adam,
)
from nemo_terminal.training.preemption import PreemptionFlag
from nemo_terminal.training.preflight import check_context_length
from nemo_terminal.training.resume import resume_point

log = logging.getLogger("nemo_terminal.train")


class Trainer:
    """Owns the model chunks, optimizer, scheduler and data module of one run."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.run_dir = Path(cfg.run_dir)
        self.step = 0
        self.consecutive_skips = 0
        self.skipped_total = 0
        self.stopped_by: str | None = None
        """The signal a preempted run stopped on (it saved first); None when it ran to the end."""

    # -- setup ----------------------------------------------------------------------------
    def setup(self) -> Trainer:
        cfg = self.cfg
        check_run_paths(cfg)  # inputs exist, run_dir writable and apart from them: before any work
        source = self._model_source()
        _, world = init_distributed()
        dist.barrier()  # an on-the-fly import by rank 0 is complete
        resume = self._resume_path()  # config compared and newer checkpoints rolled back before any work
        self.model_cfg = self._read_model_config(source)
        # Every layout error is raised here, before any model exists or compute starts.
        cfg.parallel.check_model(
            self.model_cfg.num_hidden_layers, self.model_cfg.num_attention_heads, self.model_cfg.num_key_value_heads
        )
        self.dp = cfg.parallel.dp(world)
        self.num_micro = cfg.train.micro_batches_per_step(self.dp)
        init_parallel_state(cfg.parallel, seed=cfg.train.seed)
        assert ps.get_data_parallel_world_size() == self.dp
        self.data = self._build_data(source)
        check_context_length(self.data.seq_length, self.model_cfg.max_position_embeddings, cfg.model.yarn_factor,
                             cfg.model.yarn_original_max_position)
        self.total_steps = self._total_steps()
        self.tcfg = self._transformer_config()
        self.model = self._build_model()
        self.optimizer = build_optimizer(cfg.train, self.tcfg, self.model)
        if cfg.checkpoint.fully_reshardable and uses_torch_adam(self.optimizer):
            raise UserError(
                "checkpoint.fully_reshardable needs Transformer Engine's or apex's fused Adam: megatron-core "
                "cannot load that format into torch.optim.AdamW (its fallback without them). Set it to false; "
                "to change TP/PP, start a new run from this one's weights with model.megatron_dir=<run_dir>"
            )
        self.scheduler = build_scheduler(self.optimizer, cfg.train, self.total_steps)
        if resume is not None:
            self._load(resume, full=True)
        else:
            self._load(self.source.iter_dir, full=False)
        if is_rank0():  # the run dir is itself a checkpoint dir: export, verify and train read it
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "config.yaml").write_text(to_yaml(cfg))
            cio.write_model_config(self.run_dir, self.model_cfg)
            cio.write_training_data(self.run_dir, self.data.thinking, [str(d.path) for d in self.data.datasets])
            if source.resolve() != self.run_dir.resolve():
                cio.copy_tokenizer(self.source.require_tokenizer("model.tokenizer"), self.run_dir / cio.TOKENIZER_DIR)
        return self

    def _model_source(self) -> Path:
        """The Megatron checkpoint dir to start from; an hf_dir is imported once, by rank 0."""
        if self.cfg.model.megatron_dir:
            return Path(self.cfg.model.megatron_dir)
        out = self.run_dir / "imported"
        if launch_rank() == 0 and not (out / cio.LATEST).is_file():
            # Its own process: import builds a world of one; the other ranks wait in init_distributed.
            cmd = [sys.executable, "-m", "nemo_terminal", "import", "--hf-dir", str(self.cfg.model.hf_dir),
                   "--out", str(out), "--dtype", self.cfg.train.precision, "--force"]
            if subprocess.run(cmd, env=single_process_env()).returncode != 0:
                raise UserError(f"importing model.hf_dir={self.cfg.model.hf_dir} failed (see above)")
        return out

    def _read_model_config(self, source: Path) -> Qwen3Config:
        # Ours, or a Megatron-LM/Bridge layout (checkpoint/source.py); the tokenizer may come from model.tokenizer.
        self.source: CheckpointSource = open_checkpoint(source, self.cfg.model.tokenizer)
        model_cfg = self.source.cfg
        if self.cfg.model.yarn_factor:
            model_cfg.rope_scaling = {
                "rope_type": "yarn",
                "factor": self.cfg.model.yarn_factor,
                "original_max_position_embeddings": self.cfg.model.yarn_original_max_position,
            }
            model_cfg.max_position_embeddings = int(
                self.cfg.model.yarn_original_max_position * self.cfg.model.yarn_factor
            )
        return model_cfg

    def _build_data(self, source: Path):
        cfg = self.cfg
        data = TerminalDataModule(
            cfg.data,
            global_batch_size=cfg.train.global_batch_size,
            micro_batch_size=cfg.train.micro_batch_size,
            dp_rank=ps.get_data_parallel_rank(),
            dp_size=self.dp,
            cp_rank=ps.get_context_parallel_rank(),
            cp_size=cfg.parallel.cp,
            required_pad_multiple=cfg.parallel.pad_multiple(),
            tokenizer_hash=tokenizer_hash(self.source.require_tokenizer("model.tokenizer")),
        )
        data.setup()
        return data

    def _total_steps(self) -> int:
        train = self.cfg.train
        if train.max_steps is not None:
            return int(train.max_steps)
        if self.data.max_steps is not None:  # a finite curriculum decides its own length
            return int(self.data.max_steps)
        steps = int(math.ceil(self.data.steps_per_epoch * train.epochs))
        if steps < 1:
            raise UserError("the data holds less than one global batch; lower train.global_batch_size")
        return steps

    def _transformer_config(self):
        p, t = self.cfg.parallel, self.cfg.train
        self.perf = performance.resolve(
            t, accelerator=current_device().is_accelerator, cp=p.cp, dp_cp=self.dp * p.cp,
            backend=resolve_attention_backend(self.cfg.model.attention_backend, p.sequence_parallel),
            yarn=rope_kwargs(self.model_cfg)["position_embedding_type"] == "yarn",
        )
        if is_rank0():
            for reason in self.perf.dropped:
                log.info("%s", reason)
        tcfg = to_transformer_config(
            self.model_cfg, tp=p.tp, pp=p.pp, vpp=p.vpp, cp=p.cp, sequence_parallel=p.sequence_parallel,
            first_stage_layers=p.first_stage_layers, last_stage_layers=p.last_stage_layers,
            precision=t.precision, recompute=t.recompute, **self.perf.transformer,
        )
        tcfg.finalize_model_grads_func = finalize_model_grads
        # Batched p2p posts a send and a recv to the same peer at once (pp=2, interleaved);
        # gloo may match them crosswise, swapping activations and gradients. NCCL does not.
        tcfg.batch_p2p_comm = current_device().backend == "nccl"
        return tcfg

    def _build_model(self) -> list:

        chunks = []
        vpp = self.cfg.parallel.vpp
        for vp_stage in range(vpp or 1):
            stage = vp_stage if vpp else None
            chunk = build_gpt_model(
                self.model_cfg, self.tcfg, self.cfg.model.attention_backend,
                pre_process=ps.is_pipeline_first_stage(ignore_virtual=False, vp_stage=stage),
                post_process=ps.is_pipeline_last_stage(ignore_virtual=False, vp_stage=stage),
                vp_stage=stage,
            )
            chunks.append(current_device().move(chunk))
        ddp_cfg = DistributedDataParallelConfig(
            grad_reduce_in_fp32=True, use_distributed_optimizer=True, check_for_nan_in_grad=False,
            average_in_collective=False, **self.perf.ddp,
        )
        wrapped = [
            DistributedDataParallel(config=self.tcfg, ddp_config=ddp_cfg, module=c, disable_bucketing=i > 0)
            for i, c in enumerate(chunks)
        ]
        for chunk in wrapped:
            chunk.broadcast_params()
        def per_chunk(name: str):
            funcs = [getattr(c, name) for c in wrapped]
            return funcs if len(funcs) > 1 else funcs[0]

        self.tcfg.no_sync_func = per_chunk("no_sync")
        if ddp_cfg.overlap_grad_reduce:  # as Megatron-LM: the schedule starts each chunk's reduce in order
            self.tcfg.grad_sync_func = per_chunk("start_grad_sync")
        return wrapped

    # -- checkpoints ----------------------------------------------------------------------
    def _model_state(self) -> dict[str, Any]:
        if len(self.model) == 1:  # keys of the unwrapped GPTModel: the same at any TP/PP (see convert)
            return {"model": self.model[0].module.sharded_state_dict()}
        return {f"model{i}": chunk.module.sharded_state_dict() for i, chunk in enumerate(self.model)}

    def _resume_path(self) -> Path | None:
        return resume_point(self.cfg, self.run_dir)

    def _load(self, path: Path, full: bool) -> None:
        check_before_load(path, self.cfg.checkpoint.verify_hashes)  # safe pickles, sizes, content hashes
        state = self._model_state()
        if full:
            init_torch_adam_state(self.optimizer)
            state["optimizer"] = self.optimizer.sharded_state_dict(state, is_loading=True, metadata=self._optim_meta())
        loaded = checkpoint.load(checkpoint.drop_absent_extra_state(state, path), path)
        for i, chunk in enumerate(self.model):
            result = chunk.module.load_state_dict(
                loaded["model" if len(self.model) == 1 else f"model{i}"], strict=False
            )
            wrong = [k for k in (*result.missing_keys, *result.unexpected_keys) if not k.endswith("_extra_state")]
            if wrong:
                raise UserError(f"checkpoint {path} does not match the model: {wrong[:8]}")
        if full:
            with torch.no_grad():  # fp32 main params are views of leaf params; the copy is not a graph op
                self.optimizer.load_state_dict(loaded["optimizer"])
            self.scheduler.load_state_dict(loaded["opt_param_scheduler"])
            self.scheduler.change_length(self.total_steps)  # max_steps/epochs changed at resume: re-plan
            self.data.load_state_dict(loaded["data"])
            self.step = int(loaded["iteration"])
            self.skipped_total = int(loaded.get("skipped_total", 0))
            init_torch_adam_state(self.optimizer, updates=self.step - self.skipped_total, overwrite_step=True)
            log.info("resumed from %s at step %d", path, self.step)
        else:
            self.optimizer.reload_model_params()  # copy loaded weights into fp32 master params
            log.info("initial weights from %s", path)

    def _optim_meta(self) -> dict[str, Any]:
        """dp_reshardable saves in parallel with no gather; fully_reshardable also resumes at another TP/PP."""
        kind = "fully_reshardable" if self.cfg.checkpoint.fully_reshardable else "dp_reshardable"
        return {"distrib_optim_sharding_type": kind}

    def save(self) -> Path:
        if self.perf.ddp["overlap_param_gather"]:  # updated shards are gathered lazily: gather them now
            for chunk in self.model:
                chunk.start_param_sync(force_sync=True)
        state = self._model_state()
        state["optimizer"] = self.optimizer.sharded_state_dict(state, metadata=self._optim_meta())
        p = self.cfg.parallel
        layout = dict(tp=p.tp, pp=p.pp, vpp=p.vpp, first_stage_layers=p.first_stage_layers,
                      last_stage_layers=p.last_stage_layers, world_size=dist.get_world_size())
        state.update(megatron_lm.common_state(self.model_cfg, self.step, **layout))  # what Megatron-LM/Bridge read
        if is_rank0():  # TE-spec loaders need every TE module's _extra_state; one rank writes the missing ones

            model_parts = [v for k, v in state.items() if k.startswith("model")]
            state["te_extra_state"] = missing_extra_state(self.model_cfg, list(nested_values(model_parts)))
        state.update(
            opt_param_scheduler=self.scheduler.state_dict(), data=self.data.state_dict(),
            iteration=self.step, skipped_total=self.skipped_total,
        )
        files = {megatron_lm.RUN_CONFIG: megatron_lm.run_config_yaml(self.model_cfg, p.tp, p.pp)}
        return checkpoint.save(state, self.run_dir, self.step, self.cfg.checkpoint.keep_last, files=files)

    # -- the loop -------------------------------------------------------------------------
    def _forward_step_func(self):
        return partial(_forward_step, padded_only=self.perf.padded_only_cu_seqlens)

    def train_step(self, micro_batches: list[dict]) -> dict[str, Any]:
        """One optimizer step over this rank's micro-batches; returns the global metrics."""
        for chunk in self.model:
            chunk.zero_grad_buffer()
        self.optimizer.zero_grad()
        batches = [_to_device(b) for b in micro_batches]
        iterators: Any = [iter(batches) for _ in self.model] if len(self.model) > 1 else iter(batches)
        reports = get_forward_backward_func()(
            forward_step_func=self._forward_step_func(), data_iterator=iterators, model=self.model,
            num_microbatches=len(batches), seq_length=int(batches[0]["tokens"].shape[1]) * self.cfg.parallel.cp,
            micro_batch_size=1, forward_only=False,
        )
        loss_sum, loss_tokens = _global_loss(reports)
        skipped = not math.isfinite(loss_sum)
        grad_norm = float("nan")
        if not skipped:
            grad_norm = step_if_finite(self.optimizer, self.cfg.train.clip_grad)
            skipped = not math.isfinite(grad_norm)
        if not skipped:
            self.scheduler.step(increment=1)
        return dict(
            loss=loss_sum / max(loss_tokens, 1), loss_tokens=int(loss_tokens), grad_norm=grad_norm, skipped=skipped
        )

    def evaluate(self) -> float | None:
        """Token-mean loss over the validation bins (all DP×CP ranks), or None without a validation set."""
        val = self.data.val_dataloader()
        reports: list = []
        for chunk in self.model:
            chunk.eval()
        with torch.no_grad():  # one step's worth of micro-batches on the device at a time
            while group := [_to_device(b) for b in itertools.islice(val, self.num_micro)]:
                iterators: Any = [iter(group) for _ in self.model] if len(self.model) > 1 else iter(group)
                reports += get_forward_backward_func()(
                    forward_step_func=self._forward_step_func(), data_iterator=iterators, model=self.model,
                    num_microbatches=len(group), seq_length=int(group[0]["tokens"].shape[1]) * self.cfg.parallel.cp,
                    micro_batch_size=1, forward_only=True,
                )
        for chunk in self.model:
            chunk.train()
        loss_sum, loss_tokens = _global_loss(reports)
        return loss_sum / loss_tokens if loss_tokens else None

    def train(self) -> list[dict[str, Any]]:
        cfg = self.cfg
        metrics = MetricsLogger(cfg, self.total_steps, self.step, enabled=is_rank0())
        it = self.data.train_dataloader()
        peak = current_device().peak_bf16_flops()
        history = []
        log.info("training %d steps (%d micro-batches/step/rank, dp=%d) from step %d",
                 self.total_steps, self.num_micro, self.dp, self.step)
        preempt = PreemptionFlag()
        while self.step < self.total_steps:
            t0 = time.perf_counter()
            micro = [next(it) for _ in range(self.num_micro)]
            lr = self.optimizer.param_groups[0]["lr"]
            out = self.train_step(micro)
            self.step += 1
            tokens, sq = _global_token_stats(micro)
            dt = time.perf_counter() - t0
            record = dict(step=self.step, lr=lr, tokens=tokens, tokens_per_s=tokens / dt, **out)
            record["mfu"] = (
                flops_per_step(self.model_cfg, tokens, sq) / dt / (peak * dist.get_world_size()) if peak else None
            )
            self._count_skip(out["skipped"])
            record["skipped"] = bool(out["skipped"])
            every = cfg.train.eval_interval
            if (every and self.step % every == 0) or self.step == self.total_steps:
                record["val_loss"] = self.evaluate()
            metrics.log_step(record)
            history.append(record)
            interval = cfg.checkpoint.save_interval
            last = self.step == self.total_steps
            stop = preempt.agreed()
            if (interval and self.step % interval == 0) or (last and cfg.checkpoint.save_final) or stop:
                self.save()
            if stop:
                self.stopped_by = preempt.name
                log.warning("stopping at step %d on %s: checkpoint saved; resume with checkpoint.resume=auto",
                            self.step, preempt.name)
                break
        preempt.restore()
        metrics.close()
        return history

    def _count_skip(self, skipped: bool) -> None:
        if not skipped:
            self.consecutive_skips = 0
            return
        self.consecutive_skips += 1
        self.skipped_total += 1
        log.warning("step %d skipped: non-finite loss or gradient norm", self.step)
        if self.consecutive_skips >= self.cfg.train.max_consecutive_skips:
            raise UserError(
                f"{self.consecutive_skips} consecutive steps had NaN/Inf loss or gradients "
                f"(train.max_consecutive_skips); lower train.lr or check the data"
            )


def _forward_step(data_iterator: Iterator, model, padded_only: bool = False):
    batch = next(data_iterator)
    output = model(
        batch["tokens"], batch["position_ids"], None, labels=batch["labels"],
        packed_seq_params=packed_seq_params(batch, padded_only=padded_only),
    )
    return output, partial(masked_token_loss, batch["loss_mask"])


def _to_device(batch: dict) -> dict:
    return current_device().move(batch)


def _global_loss(reports: list[dict]) -> tuple[float, float]:
    """Σ loss and Σ loss tokens over micro-batches, DP and CP, known on every rank."""
    total = current_device().zeros(2, dtype=torch.float64)
    if ps.is_pipeline_last_stage(ignore_virtual=True):
        for report in reports:
            total += report["lm loss"].detach().double().to(total.device)
    dist.all_reduce(total, group=ps.get_data_parallel_group(with_context_parallel=True))
    dist.broadcast(total, src=ps.get_pipeline_model_parallel_last_rank(), group=ps.get_pipeline_model_parallel_group())
    return float(total[0]), float(total[1])


def _global_token_stats(micro: list[dict]) -> tuple[int, float]:
    """Real tokens and Σ(doc length²) of the global batch (for throughput and MFU)."""
    tokens = sum(int(b["num_tokens"]) for b in micro)
    sq = 0.0
    if ps.get_context_parallel_rank() == 0 and ps.get_tensor_model_parallel_rank() == 0:
        for b in micro:
            lens = (b["cu_seqlens"][1:] - b["cu_seqlens"][:-1]).double()
            sq += float((lens * lens).sum())
    stats = current_device().move(torch.tensor([tokens, sq], dtype=torch.float64))
    dist.all_reduce(stats, group=ps.get_data_parallel_group(with_context_parallel=True))
    # Each DP×CP rank counted its own real tokens; CP ranks hold disjoint shares.
    return int(stats[0]), float(stats[1])
