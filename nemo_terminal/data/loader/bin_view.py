"""Show one packed bin: its documents, with the trained tokens marked (for `nemo-terminal inspect`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from nemo_terminal.errors import UserError

GREEN, RESET = "\x1b[32m", "\x1b[0m"


def bin_documents(ds: Any, index: int) -> list[dict[str, Any]]:
    """Bin `index` as a list of documents: unpadded input_ids and loss_mask, plus lengths."""
    if not 0 <= index < len(ds):
        raise UserError(f"--index {index} is out of range: {ds.path} has {len(ds)} bins (0..{len(ds) - 1})")
    b = ds.bin(index)
    docs, start = [], 0
    for n, padded in zip(b.doc_lens.tolist(), b.doc_lens_padded.tolist(), strict=False):
        docs.append({"input_ids": b.tokens[start:start + n].tolist(),
                     "loss_mask": b.loss_mask[start:start + n].tolist(),
                     "length": n, "padded_length": padded})
        start += padded
    return docs


def _runs(mask: np.ndarray) -> list[tuple[int, int, int]]:
    """(start, stop, value) of constant stretches of mask."""
    if not len(mask):
        return []
    cuts = np.flatnonzero(np.diff(mask)) + 1
    bounds = [0, *cuts.tolist(), len(mask)]
    return [(a, b, int(mask[a])) for a, b in zip(bounds[:-1], bounds[1:], strict=False)]


def render_bin(ds: Any, index: int, tokenizer_dir: str | None, color: bool) -> str:
    """Human view: decoded text per document; trained tokens in green (tty) or inside [[ ]]."""
    tok_dir = tokenizer_dir or ds.manifest.get("tokenizer_dir")
    if not tok_dir or not (Path(tok_dir) / "tokenizer.json").is_file():
        raise UserError(f"tokenizer {tok_dir!r} not found; pass --tokenizer TOKDIR (the one used by prepare)")
    tok = Tokenizer.from_file(str(Path(tok_dir) / "tokenizer.json"))
    docs = bin_documents(ds, index)
    used = sum(d["padded_length"] for d in docs)
    out = [f"bin {index} of {len(ds)}: {len(docs)} documents, {used}/{ds.seq_length} tokens used "
           f"({'green' if color else '[[...]]'} = trained)"]
    for k, d in enumerate(docs):
        ids, mask = np.asarray(d["input_ids"]), np.asarray(d["loss_mask"])
        out.append(f"── document {k}: {d['length']} tokens (+{d['padded_length'] - d['length']} padding), "
                   f"{int(mask.sum())} trained ──")
        parts = []
        for a, b, trained in _runs(mask):
            text = tok.decode(ids[a:b].tolist(), skip_special_tokens=False)
            parts.append((GREEN + text + RESET if color else "[[" + text + "]]") if trained else text)
        out.append("".join(parts))
        pad = d["padded_length"] - d["length"]
        if pad:
            out.append(f"<padding: {pad} × id {ds.pad_id}>")
    return "\n".join(out)
