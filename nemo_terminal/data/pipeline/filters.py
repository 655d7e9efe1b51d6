"""Record filters from the paper (FACTS.md §2), each a switch with a named drop reason.

Decontamination hashes word n-grams (64-bit, stable across processes) and looks them up in a
sorted array built once from the benchmark file, so the cost per record is O(words · log B)
however many benchmark instructions there are: no nested loop over instructions.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np

from nemo_terminal.data.pipeline.config import FilterConfig
from nemo_terminal.data.pipeline.validate import Turns
from nemo_terminal.errors import UserError

FILTER_REASONS = {
    "contaminated": "first user turn shares an n-gram with a benchmark instruction",
    "identity_leak": "an assistant turn matches a teacher-identity pattern",
    "chinese_chars": "an assistant turn contains CJK ideographs",
    "incomplete": 'last assistant turn does not say "task_complete": true',
    "unsuccessful": "reward missing or below 1 under filters.require_success",
    "too_few_turns": "fewer assistant turns than filters.min_turns",
    "too_many_turns": "more assistant turns than filters.max_turns",
    "duplicate": "the same conversation was already kept",
}
# The teacher naming itself (or being named as the speaker). Deliberately not a bare "deepseek":
# a trajectory may legitimately `pip install` or grep for a model name.
DEFAULT_IDENTITY_PATTERNS = (
    r"\b(?:I am|I'm|as|this is)\s+(?:an? )?(?:AI )?(?:assistant |model |language model )?"
    r"(?:called |named )?(?:DeepSeek|ChatGPT|Claude|Gemini|GPT-4o?|Qwen|Kimi)\b",
    r"\b(?:developed|created|trained|built|made|provided) by (?:DeepSeek|OpenAI|Anthropic|Google|"
    r"Alibaba|Moonshot|深度求索)",
    r"\bDeepSeek[- ]?(?:V\d|R\d|Coder|Chat)",
    r"深度求索",
)
# Every default identity pattern contains one of these words (matched case-insensitively). In
# ASCII text that is a substring test on the lowercased text: ~20x cheaper than the regex, and
# exact (no non-ASCII character can case-fold into them there), so the regex runs only on hits.
_IDENTITY_KEYWORDS = ("deepseek", "chatgpt", "claude", "gemini", "gpt-4", "qwen", "kimi", "openai", "anthropic",
                      "google", "alibaba", "moonshot")
_CJK = re.compile("[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002a6df]")
_COMPLETE = re.compile(r'"task_complete"\s*:\s*true')
_MULT = np.uint64(0x9E3779B97F4A7C15)  # odd multiplier for the polynomial n-gram hash


def _word_hash(word: str) -> int:
    return int.from_bytes(hashlib.blake2b(word.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")


def ngram_hashes(text: str, n: int) -> np.ndarray:
    """uint64 [max(0, words-n+1)]: hashes of the lowercase, whitespace-split word n-grams."""
    words = text.lower().split()
    if len(words) < n:
        return np.zeros(0, dtype=np.uint64)
    w = np.fromiter((_word_hash(x) for x in words), dtype=np.uint64, count=len(words))
    m = len(words) - n + 1
    acc = w[:m].copy()
    with np.errstate(over="ignore"):
        for j in range(1, n):
            acc = acc * _MULT + w[j:j + m]  # wraps mod 2^64: a polynomial rolling hash
    return acc


def read_benchmark_instructions(path: str) -> list[str]:
    """Instructions from .txt (blank-line separated), .json (list) or .jsonl (str or {"instruction"})."""
    p = Path(path)
    text = p.read_text(encoding="utf-8")
    if p.suffix == ".json":
        items = json.loads(text)
        if not isinstance(items, list):
            raise UserError(f"{path}: expected a JSON list of instruction strings")
        return [str(x) for x in items]
    if p.suffix == ".jsonl":
        out = []
        for lineno, line in enumerate(text.splitlines(), 1):
            if line.strip():
                obj = json.loads(line)
                if isinstance(obj, dict):
                    if "instruction" not in obj:
                        raise UserError(f"{path}:{lineno}: object without an `instruction` field")
                    obj = obj["instruction"]
                out.append(str(obj))
        return out
    return [block for block in re.split(r"\n\s*\n", text) if block.strip()]


def build_benchmark_index(path: str, n: int) -> np.ndarray:
    """Sorted unique uint64 n-gram hashes of every benchmark instruction."""
    hashes = [ngram_hashes(x, n) for x in read_benchmark_instructions(path)]
    return np.unique(np.concatenate(hashes)) if hashes else np.zeros(0, dtype=np.uint64)


def conversation_hash(turns: Turns) -> int:
    """64-bit content hash of a conversation (roles + contents, length-prefixed)."""
    h = hashlib.blake2b(digest_size=8)
    for role, content in turns:
        data = content.encode("utf-8")
        h.update(f"{role}:{len(data)}:".encode())
        h.update(data)
    return int.from_bytes(h.digest(), "little")


class RecordFilter:
    """The per-record filters except dedup (which needs global state and lives in prepare)."""

    def __init__(self, cfg: FilterConfig, benchmark_index: np.ndarray | None = None):
        self.cfg = cfg
        self.benchmark = benchmark_index if benchmark_index is not None and len(benchmark_index) else None
        patterns = list(DEFAULT_IDENTITY_PATTERNS) + list(cfg.identity_patterns_extra)
        self.identity = re.compile("|".join(f"(?:{p})" for p in patterns), re.IGNORECASE)
        self._identity_default = re.compile("|".join(f"(?:{p})" for p in DEFAULT_IDENTITY_PATTERNS), re.IGNORECASE)
        extra = cfg.identity_patterns_extra
        self._identity_extra = re.compile("|".join(f"(?:{p})" for p in extra), re.IGNORECASE) if extra else None

    def leaks_identity(self, text: str) -> bool:
        """`self.identity.search(text)`, computed faster: see _IDENTITY_KEYWORDS."""
        if self._identity_extra is not None and self._identity_extra.search(text):
            return True
        if text.isascii():
            low = text.lower()
            if not any(k in low for k in _IDENTITY_KEYWORDS):
                return False
        return self._identity_default.search(text) is not None

    def contaminated(self, turns: Turns) -> bool:
        if self.benchmark is None:
            return False
        grams = ngram_hashes(turns[0][1], self.cfg.decontaminate_ngram)
        if not len(grams):
            return False
        pos = np.searchsorted(self.benchmark, grams).clip(max=len(self.benchmark) - 1)
        return bool(np.any(self.benchmark[pos] == grams))

    def check(self, turns: Turns) -> str | None:
        """The first failing filter's reason, or None. Order: cheap checks first."""
        cfg = self.cfg
        answers = [c for r, c in turns if r == "assistant"]
        if cfg.min_turns is not None and len(answers) < cfg.min_turns:
            return "too_few_turns"
        if cfg.max_turns is not None and len(answers) > cfg.max_turns:
            return "too_many_turns"
        if cfg.require_complete and not _COMPLETE.search(answers[-1]):
            return "incomplete"
        if cfg.chinese and any(not a.isascii() and _CJK.search(a) for a in answers):
            return "chinese_chars"
        if cfg.identity_leak and any(self.leaks_identity(a) for a in answers):
            return "identity_leak"
        if self.contaminated(turns):
            return "contaminated"
        return None
