"""The Qwen3 tokenizer, built offline from the BPE ranks that ship in `dashscope`.

No model hub is reachable from CI or many clusters, yet every tiny test model
and the data pipeline need the exact Qwen3 token ids. The ranks file
(`dashscope/resources/qwen.tiktoken`) holds the 151,643 byte-level BPE tokens
Qwen2/2.5/3 share; this module turns them into a Hugging Face tokenizer
directory (tokenizer.json + tokenizer_config.json + special_tokens_map.json)
with Qwen3's added tokens and Qwen3's published chat template.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import logging
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import BPE

from nemo_terminal.errors import UserError
from nemo_terminal.models.chat_template import published_qwen3_template

log = logging.getLogger(__name__)

ENDOFTEXT_ID = 151643
IM_START_ID = 151644
IM_END_ID = 151645
THINK_ID = 151667
THINK_END_ID = 151668
NUM_BPE_TOKENS = 151643
MODEL_MAX_LENGTH = 40960

# Files a tokenizer directory consists of; copied next to checkpoints and exports.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")

PRETOKENIZE_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# Qwen3's added tokens, in id order from ENDOFTEXT_ID: (content, special).
# "special" follows Qwen3: tool-call, FIM and think markers are plain added tokens,
# so `skip_special_tokens=True` keeps them in decoded text.
ADDED_TOKENS: tuple[tuple[str, bool], ...] = (
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
    ("<tool_response>", False),
    ("</tool_response>", False),
    ("<think>", False),
    ("</think>", False),
)
assert ENDOFTEXT_ID + len(ADDED_TOKENS) - 1 == THINK_END_ID

def ranks_path() -> Path:
    """Where `dashscope` keeps the Qwen BPE ranks."""
    try:
        import dashscope  # lazy: 0.6 s to import, for the ranks file only (building a tokenizer)
    except ImportError:
        raise UserError("the `dashscope` package (it ships qwen.tiktoken) is missing: pip install dashscope") from None
    path = Path(dashscope.__file__).parent / "resources" / "qwen.tiktoken"
    if not path.is_file():
        raise UserError(f"{path} is missing: reinstall dashscope (pip install --force-reinstall dashscope)")
    return path


def load_ranks(path: Path | None = None) -> dict[bytes, int]:
    """Token bytes -> rank, from a tiktoken file ("base64token rank" per line)."""
    path = path or ranks_path()
    ranks: dict[bytes, int] = {}
    for line in path.read_bytes().splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    if len(ranks) != NUM_BPE_TOKENS or sorted(ranks.values()) != list(range(NUM_BPE_TOKENS)):
        raise UserError(f"{path}: expected ranks 0..{NUM_BPE_TOKENS - 1}, got {len(ranks)} entries")
    return ranks


def _bytes_to_unicode() -> dict[int, str]:
    """The byte-level alphabet: every byte gets a printable character (GPT-2's scheme)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def _split_of(token: bytes, rank: int, ranks: dict[bytes, int]) -> tuple[bytes, bytes]:
    """The two tokens whose merge produced `token`: replay BPE with merges ranked below `rank`."""
    parts = [token[i : i + 1] for i in range(len(token))]
    while len(parts) > 2:
        best, best_rank = -1, rank
        for i in range(len(parts) - 1):
            r = ranks.get(parts[i] + parts[i + 1])
            if r is not None and r < best_rank:
                best, best_rank = i, r
        assert best >= 0, f"BPE ranks are inconsistent at token {token!r}"
        parts[best : best + 2] = [parts[best] + parts[best + 1]]
    return parts[0], parts[1]


def bpe_vocab_and_merges(ranks: dict[bytes, int]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """tiktoken ranks -> (byte-level vocab, merges ordered by the rank of their result).

    Why not transformers' `TikTokenConverter`: measured (transformers 5, same ranks, regex, NFC and
    added tokens), its tokenizer.json is not byte-identical to this one: it lists every split of a
    token whose halves are tokens (294,166 merges instead of one per token, 151,387) and sets
    `ignore_merges`. Token ids agree, but the file, and so `tokenizer_hash` of every prepared
    dataset, would change; it is no faster either (17 s vs 18 s on 2 cores).
    """
    alphabet = _bytes_to_unicode()

    def show(b: bytes) -> str:
        return "".join(alphabet[x] for x in b)

    vocab = {show(tok): rank for tok, rank in ranks.items()}
    merges = []
    for tok, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(tok) > 1:
            left, right = _split_of(tok, rank, ranks)
            merges.append((show(left), show(right)))
    return vocab, merges


def build_tokenizer(ranks: dict[bytes, int] | None = None):
    """The `tokenizers.Tokenizer` for Qwen3 (BPE + Qwen regex + byte level + added tokens)."""
    vocab, merges = bpe_vocab_and_merges(ranks or load_ranks())
    tok = Tokenizer(BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.decoder = decoders.ByteLevel()
    for content, special in ADDED_TOKENS:
        # One at a time, in order, so each lands on its Qwen3 id.
        added = AddedToken(content, special=special, normalized=False, single_word=False, lstrip=False, rstrip=False)
        (tok.add_special_tokens if special else tok.add_tokens)([added])
    assert tok.token_to_id("</think>") == THINK_END_ID and tok.get_vocab_size() == THINK_END_ID + 1
    return tok


@functools.lru_cache(maxsize=1)
def _tokenizer_json() -> str:
    """Built once per process: tests and tools write many tokenizer dirs."""
    return build_tokenizer().to_str(pretty=True)


def _tokenizer_config() -> dict:
    decoder = {
        str(ENDOFTEXT_ID + i): dict(
            content=c, lstrip=False, normalized=False, rstrip=False, single_word=False, special=s
        )
        for i, (c, s) in enumerate(ADDED_TOKENS)
    }
    return dict(
        add_bos_token=False,
        add_prefix_space=False,
        added_tokens_decoder=decoder,
        additional_special_tokens=[c for c, s in ADDED_TOKENS if s and c not in ("<|endoftext|>",)],
        bos_token=None,
        chat_template=published_qwen3_template(),  # what a Qwen3 checkpoint ships
        clean_up_tokenization_spaces=False,
        eos_token="<|im_end|>",
        errors="replace",
        model_max_length=MODEL_MAX_LENGTH,
        pad_token="<|endoftext|>",
        split_special_tokens=False,
        tokenizer_class="Qwen2Tokenizer",
        unk_token=None,
    )


def write_qwen3_tokenizer(out_dir: str | Path) -> Path:
    """Write the Qwen3 tokenizer as a Hugging Face tokenizer directory; return the directory."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot create tokenizer directory {out}: {err.strerror}") from None
    (out / "tokenizer.json").write_text(_tokenizer_json(), encoding="utf-8")
    cfg = _tokenizer_config()
    (out / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n")
    special = dict(
        additional_special_tokens=cfg["additional_special_tokens"],
        eos_token=cfg["eos_token"],
        pad_token=cfg["pad_token"],
    )
    (out / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")
    log.info("wrote the Qwen3 tokenizer to %s", out)
    return out


def check_tokenizer_dir(path: str | Path) -> Path:
    """Raise a UserError naming the directory unless it holds a tokenizer."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"tokenizer directory {path} does not exist (a local directory holding tokenizer.json; "
                        "nothing is downloaded)")
    if not path.is_dir():
        raise UserError(f"tokenizer directory {path} is a file; give the directory that holds tokenizer.json")
    missing = [f for f in ("tokenizer.json", "tokenizer_config.json") if not (path / f).is_file()]
    if missing:
        raise UserError(
            f"{path} is not a tokenizer directory: missing {missing}; "
            "write one with `nemo-terminal tiny-model` or point at a Qwen3 HF directory"
        )
    return path


def load_tokenizer(path: str | Path):
    """`AutoTokenizer` on a local directory; remote code is never trusted."""
    from transformers import AutoTokenizer  # lazy: 0.7 s to import; prepare and the trainer import this module

    path = check_tokenizer_dir(path)
    return AutoTokenizer.from_pretrained(str(path), trust_remote_code=False, local_files_only=True)


def tokenizer_hash(path: str | Path) -> str:
    """sha256 of what decides token ids: tokenizer.json's model/normalizer/pre-tokenizer/added tokens
    and the special tokens of tokenizer_config.json. Formatting and the chat template do not count.

    Parsing tokenizer.json takes ~1.5 s, and prepare, the data module and the trainer all ask:
    the result is cached per file version (path, size, mtime)."""
    path = check_tokenizer_dir(path).resolve()
    stamp = tuple((st.st_size, st.st_mtime_ns) for st in
                  ((path / name).stat() for name in ("tokenizer.json", "tokenizer_config.json")))
    return _tokenizer_hash(str(path), stamp)


@functools.lru_cache(maxsize=8)
def _tokenizer_hash(path: str, stamp: tuple) -> str:
    tok = json.loads((Path(path) / "tokenizer.json").read_text(encoding="utf-8"))
    cfg = json.loads((Path(path) / "tokenizer_config.json").read_text(encoding="utf-8"))
    keys = ("model", "normalizer", "pre_tokenizer", "added_tokens")
    canon = {k: tok.get(k) for k in keys}
    canon["special"] = {k: cfg.get(k) for k in ("eos_token", "pad_token", "bos_token", "unk_token")}
    blob = json.dumps(canon, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()
