"""Per-step metrics: metrics.jsonl for every step, a readable line per interval, TB/W&B.

Only rank 0 writes. Secrets never reach a log: the W&B key comes from the
environment and is never recorded.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

from nemo_terminal.training.config import Config

log = logging.getLogger("nemo_terminal.train")


def flops_per_step(model_cfg, tokens: int, sum_doc_len_sq: float) -> float:
    """Training FLOPs: 6·N·tokens (dense matmuls, fwd+bwd) + causal attention.

    Attention per layer, forward: QKᵀ and AV are 2·2·d_attn FLOPs per (query, key) pair,
    with Σ L²/2 causal pairs over documents of length L; backward doubles it:
    3 · 4 · d_attn · Σ L²/2 = 6 · d_attn · Σ L² per layer, d_attn = heads · head_dim.
    N excludes the input embedding (a lookup, not a matmul).
    """
    n = model_cfg.num_params() - model_cfg.vocab_size * model_cfg.hidden_size * (
        0 if model_cfg.tie_word_embeddings else 1
    )
    d_attn = model_cfg.num_attention_heads * model_cfg.head_dim
    return 6.0 * n * tokens + 6.0 * model_cfg.num_hidden_layers * d_attn * sum_doc_len_sq


class MetricsLogger:
    def __init__(self, cfg: Config, total_steps: int, start_step: int, enabled: bool):
        self.enabled = enabled
        self.cfg = cfg
        self.total = total_steps
        self.start_step = start_step
        self.t0 = time.perf_counter()
        self.tb = None
        self.wandb = None
        if not enabled:
            return
        self.path = Path(cfg.run_dir) / "metrics.jsonl"
        keep_rows_up_to(self.path, start_step)
        if cfg.log.tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # lazy: optional (tensorboard is not a dependency)

            self.tb = SummaryWriter(str(Path(cfg.run_dir) / "tensorboard"))
        if cfg.log.wandb:
            import wandb  # lazy: optional, not a dependency; reads WANDB_API_KEY from the environment, never logs it

            self.wandb = wandb.init(project=cfg.log.wandb_project, dir=cfg.run_dir, resume="allow")

    def log_step(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        step = record["step"]
        if self.tb is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key != "step" and math.isfinite(value):
                    self.tb.add_scalar(f"train/{key}", value, step)
        if self.wandb is not None:
            self.wandb.log({k: v for k, v in record.items() if k != "step"}, step=step)
        if step % self.cfg.log.interval == 0 or step == self.total:
            log.info(self._line(record))

    def _line(self, r: dict[str, Any]) -> str:
        done = r["step"] - self.start_step
        elapsed = time.perf_counter() - self.t0
        eta = elapsed / max(done, 1) * (self.total - r["step"])
        mfu = f" mfu {r['mfu'] * 100:.1f}%" if r.get("mfu") is not None else ""
        skipped = " SKIPPED" if r["skipped"] else ""
        if r.get("val_loss") is not None:
            skipped += f" val_loss {r['val_loss']:.5f}"
        return (
            f"step {r['step']}/{self.total} loss {r['loss']:.5f} lr {r['lr']:.3e} "
            f"grad_norm {r['grad_norm']:.4f} tokens/s {r['tokens_per_s']:.0f}{mfu}{skipped} "
            f"eta {_hms(eta)}"
        )

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()


def _hms(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600:d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def keep_rows_up_to(path: Path, step: int) -> None:
    """On a (re)start at `step`: rows of later steps came from a run that was killed before its next
    checkpoint, or was rolled back; they move to metrics.superseded.jsonl so that metrics.jsonl
    keeps exactly one row per step (the resumed run logs those steps again)."""
    if not path.is_file():
        return
    kept, dropped = [], []
    for line in path.read_text().splitlines():
        if line.strip():
            (kept if json.loads(line).get("step", 0) <= step else dropped).append(line)
    if not dropped:
        return
    with open(path.with_name("metrics.superseded.jsonl"), "a") as f:
        f.write("".join(line + "\n" for line in dropped))
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(line + "\n" for line in kept))
    tmp.replace(path)
    log.info("metrics.jsonl: %d rows after step %d moved to metrics.superseded.jsonl", len(dropped), step)


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


