"""What `nemo-terminal eval run` executes: the `vllm serve` and `harbor run` command lines.

The paper evaluates Terminus-2 on Terminal-Bench 2.0 at a 40,960-token context. vLLM serves the
export with its chat template and the qwen3 reasoning parser; Harbor reaches it through LiteLLM as
`hosted_vllm/<served name>` at `api_base`. Terminus-2 sends earlier reasoning back only with
`interleaved_thinking`, which a model trained with thinking=keep needs (its template renders
history reasoning); its context summarisation is off unless asked for, since it rewrites the
prompts away from what training saw.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from nemo_terminal.errors import UserError
from nemo_terminal.models.chat import THINKING_POLICIES
from nemo_terminal.models.chat_template import chat_template, published_qwen3_template

MAX_MODEL_LEN = 40960  # the paper's evaluation context
DATASET = "terminal-bench@2.0"
AGENT = "terminus-2"
_NAME_OK = re.compile(r"[A-Za-z0-9._-]{1,63}")  # what Harbor accepts after hosted_vllm/


@dataclass
class EvalSettings:
    hf_dir: str
    jobs_dir: str = "eval_jobs"
    job_name: str | None = None
    served_name: str | None = None
    thinking: str | None = None  # None: read from the export's chat template
    tp: int | None = None  # None: by model size
    max_model_len: int = MAX_MODEL_LEN
    host: str = "127.0.0.1"
    port: int = 8000
    vllm: str = "vllm"
    vllm_args: list[str] = field(default_factory=list)
    harbor: str = "harbor"
    dataset: str = DATASET
    environment: str = "docker"
    n_attempts: int = 5
    n_concurrent: int = 8
    summarize: bool = False
    harbor_args: list[str] = field(default_factory=list)
    health_timeout_s: float = 1800.0


def template_policy(hf_dir: Path) -> str | None:
    """The thinking policy whose template the export ships; None for Qwen3's published one."""
    path = hf_dir / "tokenizer_config.json"
    try:
        template = json.loads(path.read_text()).get("chat_template")
    except (OSError, ValueError) as err:
        raise UserError(f"{path}: cannot read the export's tokenizer config ({err}); is --hf-dir an export?") from None
    if (hf_dir / "chat_template.jinja").is_file():
        template = (hf_dir / "chat_template.jinja").read_text()
    for policy in THINKING_POLICIES:
        if template == chat_template(policy):
            return policy
    if template != published_qwen3_template():
        raise UserError(f"{hf_dir} ships a chat template that is neither Qwen3's nor one `export` writes; "
                        "pass --thinking keep|strip_history|drop to say how it was trained")
    return None


def default_tp(hf_dir: Path) -> int:
    """1 GPU for 8B and smaller, 2 for 14B, 4 for 32B: weights plus KV cache for the concurrent trials."""
    try:
        cfg = json.loads((hf_dir / "config.json").read_text())
        params = cfg["num_hidden_layers"] * 12 * cfg["hidden_size"] ** 2
    except (OSError, ValueError, KeyError) as err:
        raise UserError(f"{hf_dir}/config.json: cannot read the model shape ({err}); pass --tp") from None
    return 1 if params < 10e9 else 2 if params < 20e9 else 4


def resolve(s: EvalSettings) -> EvalSettings:
    """Fill in what was left to defaults, checking the export and the names."""
    hf_dir = Path(s.hf_dir)
    if not (hf_dir / "config.json").is_file():
        raise UserError(f"--hf-dir {hf_dir} is not an HF model directory (no config.json); "
                        "make one with `nemo-terminal export`")
    name = s.served_name or re.sub(r"[^A-Za-z0-9._-]", "-", hf_dir.resolve().name)[:63]
    if not _NAME_OK.fullmatch(name):
        raise UserError(f"--served-name {name!r}: use letters, digits, '.', '-', '_' (at most 63); Harbor requires it")
    thinking = s.thinking or template_policy(hf_dir)
    tp = s.tp or default_tp(hf_dir)
    if s.n_attempts < 1 or s.n_concurrent < 1:
        raise UserError("--attempts and --concurrency must be at least 1")
    return EvalSettings(**{**s.__dict__, "served_name": name, "thinking": thinking, "tp": tp,
                           "jobs_dir": str(Path(s.jobs_dir).resolve())})


def vllm_command(s: EvalSettings) -> list[str]:
    cmd = [s.vllm, "serve", str(s.hf_dir), "--served-model-name", str(s.served_name),
           "--host", s.host, "--port", str(s.port), "--max-model-len", str(s.max_model_len),
           "--tensor-parallel-size", str(s.tp), "--reasoning-parser", "qwen3"]
    template = Path(s.hf_dir) / "chat_template.jinja"
    if template.is_file():
        cmd += ["--chat-template", str(template)]
    return cmd + list(s.vllm_args)


def api_base(s: EvalSettings) -> str:
    return f"http://{s.host}:{s.port}/v1"


def harbor_command(s: EvalSettings, job_name: str) -> list[str]:
    model_info = {"max_input_tokens": s.max_model_len, "max_output_tokens": s.max_model_len,
                  "input_cost_per_token": 0.0, "output_cost_per_token": 0.0}
    kwargs = {
        "api_base": api_base(s),
        "model_info": json.dumps(model_info, separators=(",", ":")),
        "interleaved_thinking": "true" if s.thinking == "keep" else "false",
        "enable_summarize": "true" if s.summarize else "false",
        "trajectory_config": json.dumps({"raw_content": True}, separators=(",", ":")),
    }
    cmd = [s.harbor, "run", "--yes", "--quiet", "--dataset", s.dataset, "--agent", AGENT,
           "--model", f"hosted_vllm/{s.served_name}", "--env", s.environment,
           "--n-attempts", str(s.n_attempts), "--n-concurrent", str(s.n_concurrent),
           "--jobs-dir", str(s.jobs_dir), "--job-name", job_name]
    for key, value in kwargs.items():
        cmd += ["--ak", f"{key}={value}"]
    return cmd + list(s.harbor_args)
