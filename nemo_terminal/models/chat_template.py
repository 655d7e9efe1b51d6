"""The chat template an export ships: renders OpenAI-style messages exactly as models/chat.py trained.

All three are Qwen3's published template (resources/qwen3_chat_template.jinja, a verbatim copy)
with small, named edits, so tools, system prompts and `enable_thinking` behave as in Qwen3:

- every policy: a separate `reasoning_content` (what Terminus-2 sends back with
  `interleaved_thinking`) takes the leading newlines off `content`, as the inline `<think>` form
  already does (vLLM's qwen3 parser leaves `\\n\\n` at the start of `content`);
- `keep`: every assistant turn with non-blank reasoning renders its `<think>` block, not only
  those after the last user turn (the history the model was trained with);
- `drop`: the generation prompt opens with the empty think block unless `enable_thinking=true`.

`strip_history` is the published template plus the first edit.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from pathlib import Path

from nemo_terminal.errors import UserError
from nemo_terminal.models.chat import THINKING_POLICIES

TEMPLATE_FILE = "chat_template.jinja"

_SEPARATE_REASONING = (
    "            {%- set reasoning_content = message.reasoning_content %}\n",
    "            {%- set reasoning_content = message.reasoning_content %}\n"
    "            {%- set content = content.lstrip('\\n') %}\n",
)
_HISTORY_REASONING = (
    "        {%- if loop.index0 > ns.last_query_index %}\n"
    "            {%- if loop.last or (not loop.last and reasoning_content) %}\n"
    "                {{- '<|im_start|>' + message.role + '\\n<think>\\n' + reasoning_content.strip('\\n') + "
    "'\\n</think>\\n\\n' + content.lstrip('\\n') }}\n"
    "            {%- else %}\n"
    "                {{- '<|im_start|>' + message.role + '\\n' + content }}\n"
    "            {%- endif %}\n"
    "        {%- else %}\n"
    "            {{- '<|im_start|>' + message.role + '\\n' + content }}\n"
    "        {%- endif %}\n",
    "        {%- if reasoning_content.strip('\\n') %}\n"
    "            {{- '<|im_start|>' + message.role + '\\n<think>\\n' + reasoning_content.strip('\\n') + "
    "'\\n</think>\\n\\n' + content.lstrip('\\n') }}\n"
    "        {%- else %}\n"
    "            {{- '<|im_start|>' + message.role + '\\n' + content }}\n"
    "        {%- endif %}\n",
)
_THINKING_OFF_BY_DEFAULT = (
    "{%- if enable_thinking is defined and enable_thinking is false %}",
    "{%- if not (enable_thinking is defined and enable_thinking) %}",
)


@functools.lru_cache(maxsize=1)
def published_qwen3_template() -> str:
    """Qwen3's chat template as published with the Qwen3 dense checkpoints."""
    return resources.files("nemo_terminal").joinpath("resources/qwen3_chat_template.jinja").read_text("utf-8")


def _edit(template: str, edit: tuple[str, str]) -> str:
    old, new = edit
    assert template.count(old) == 1, f"the Qwen3 template changed: {old[:60]!r} not found once"
    return template.replace(old, new)


def chat_template(thinking: str) -> str:
    """The template that serves a model trained under `thinking` exactly as it was trained."""
    if thinking not in THINKING_POLICIES:
        raise UserError(f"thinking must be one of {THINKING_POLICIES}, got {thinking!r}")
    template = _edit(published_qwen3_template(), _SEPARATE_REASONING)
    if thinking == "keep":
        template = _edit(template, _HISTORY_REASONING)
    if thinking == "drop":
        template = _edit(template, _THINKING_OFF_BY_DEFAULT)
    return template


def write_chat_template(tokenizer_dir: str | Path, template: str) -> None:
    """Set the template of a tokenizer directory: `chat_template.jinja` and the identical
    `chat_template` field of tokenizer_config.json (readers differ in which they look at)."""
    path = Path(tokenizer_dir) / "tokenizer_config.json"
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise UserError(f"{path}: cannot read the tokenizer config ({err})") from None
    cfg["chat_template"] = template
    path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (Path(tokenizer_dir) / TEMPLATE_FILE).write_text(template, encoding="utf-8")
