"""Near-duplicate instructions across a run: MinHash over word 5-grams, LSH to find candidates.

LSH is approximate both ways, so a candidate counts only when its estimated Jaccard similarity
reaches the threshold. Instructions are added in attempt order, which keeps the result
independent of which request finished first.
"""

from __future__ import annotations

from typing import Any

from datasketch import MinHash, MinHashLSH

NUM_PERM = 128
MINHASH_SEED = 1  # fixed: the same text always has the same signature


def shingles(text: str, n: int) -> set[bytes]:
    """Lowercase word n-grams (the whole text when shorter than n words)."""
    words = text.lower().split()
    if len(words) <= n:
        return {" ".join(words).encode()}
    return {" ".join(words[i:i + n]).encode() for i in range(len(words) - n + 1)}


class NearDuplicates:
    """`add(key, text)` -> the key of an earlier near-duplicate, or None (and the text is kept)."""

    def __init__(self, threshold: float = 0.8, ngram: int = 5):
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"near-duplicate threshold must be in (0, 1], got {threshold}")

        self.threshold, self.ngram = threshold, ngram
        self._lsh = MinHashLSH(threshold=threshold, num_perm=NUM_PERM)
        self._sigs: dict[str, Any] = {}

    def signature(self, text: str) -> Any:
        m = MinHash(num_perm=NUM_PERM, seed=MINHASH_SEED)
        m.update_batch(sorted(shingles(text, self.ngram)))
        return m

    def add(self, key: str, text: str) -> str | None:
        sig = self.signature(text)
        for other in sorted(self._lsh.query(sig)):
            if sig.jaccard(self._sigs[other]) >= self.threshold:
                return other
        self._lsh.insert(key, sig)
        self._sigs[key] = sig
        return None
