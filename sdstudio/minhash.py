"""MinHash LSH over character 5-grams: the near-duplicate half of dedup.py, computed here with numpy.

Why its own: datasketch computes the same signatures (bit for bit: tests/test_dedup.py compares them), but importing
it costs more than half a second (its aio package, scipy), its per-text calls cost more than the hashing, and its
index keeps Python objects per band and text: on a 100k-item job the index is the largest thing in memory.
"""
from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np

SHINGLE_CHARS = 5
LSH_RECALL = 0.95  # chance that a pair exactly at the threshold is even compared
# Random odd 64-bit multipliers of the 5-gram hash; fixed so results never change between runs.
_GRAM_WEIGHTS = np.random.RandomState(20240605).randint(
    0, 1 << 62, SHINGLE_CHARS, dtype=np.uint64) * np.uint64(2) + np.uint64(1)


def shingle_hashes(normalized: Sequence[str]) -> list[np.ndarray]:
    """Per text, the 32-bit hashes of its character 5-grams (unsorted, maybe repeated; a text shorter
    than five characters is one shingle, an empty text none).

    All texts are hashed in one vectorised pass over their concatenation (grams that straddle two
    texts are computed but never used): this is the hot loop of a 100k-item job, and per-text numpy
    calls cost more than the hashing itself."""
    texts = [t.ljust(SHINGLE_CHARS, "\0") if 0 < len(t) < SHINGLE_CHARS else t for t in normalized]
    points = np.frombuffer("".join(texts).encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    count = len(points) - SHINGLE_CHARS + 1
    hashed = np.zeros(max(count, 0), dtype=np.uint64)
    for offset, weight in enumerate(_GRAM_WEIGHTS):
        hashed += points[offset:offset + count].astype(np.uint64) * weight  # wraps mod 2**64
    folded = (hashed ^ (hashed >> np.uint64(32))).astype(np.uint32)
    out, start = [], 0
    for text in texts:
        out.append(folded[start:start + len(text) - SHINGLE_CHARS + 1] if text else folded[:0])
        start += len(text)
    return out


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Jaccard similarity of two texts' shingle sets, from their :func:`shingle_hashes`."""
    a, b = np.unique(a), np.unique(b)
    common = np.intersect1d(a, b, assume_unique=True).size
    union = a.size + b.size - common
    return common / union if union else 1.0


# MinHash as datasketch 2.0 computes it (scheme "affine32", its default): each shingle hash pre-mixed by the
# MurmurHash3 finalizer, then a*h + b mod 2**32 per permutation, with a and b drawn as datasketch draws them
# from the seed. Computed here, vectorised over many texts at once, because importing datasketch costs more
# than half a second (its aio package, scipy) and its per-text calls cost more than the hashing; the
# signatures are bit for bit datasketch's (tests/test_dedup.py compares them), so results never change.
_FMIX = (np.uint32(16), np.uint32(0x85EBCA6B), np.uint32(13), np.uint32(0xC2B2AE35), np.uint32(16))
_MAX32 = np.uint32(0xFFFFFFFF)
_GRAMS_PER_PASS = 1 << 14  # shingles x permutations per vectorised pass: bounds its memory (~8 MB)


@lru_cache(maxsize=8)
def _permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    gen = np.random.RandomState(seed)
    a = gen.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = gen.randint(0, 1 << 32, num_perm, dtype=np.uint32)
    a.flags.writeable = b.flags.writeable = False  # cached: shared by every call
    return a, b


def _fmix32(hv: np.ndarray) -> np.ndarray:
    s1, m1, s2, m2, s3 = _FMIX
    hv = hv ^ (hv >> s1)
    hv = hv * m1
    hv = hv ^ (hv >> s2)
    hv = hv * m2
    return hv ^ (hv >> s3)


def minhash_signatures(grams: Sequence[np.ndarray], num_perm: int = 128, seed: int = 1) -> np.ndarray:
    """One MinHash signature (``num_perm`` uint32) per text's :func:`shingle_hashes`; an empty one is all
    0xFFFFFFFF. Equal to datasketch's ``MinHash(num_perm, seed, hashfunc=int).update_batch(grams)``."""
    a, b = _permutations(num_perm, seed)
    out = np.full((len(grams), num_perm), _MAX32, dtype=np.uint32)
    start = 0
    while start < len(grams):
        stop, size = start, 0
        while stop < len(grams) and (size == 0 or size + len(grams[stop]) <= _GRAMS_PER_PASS):
            size += len(grams[stop])
            stop += 1
        chunk = [g for g in grams[start:stop] if len(g)]
        if chunk:
            mixed = _fmix32(np.concatenate(chunk).astype(np.uint32, copy=False))[:, None]
            permuted = mixed * a + b  # wraps mod 2**32
            offsets = np.cumsum([0] + [len(g) for g in chunk[:-1]])
            rows = [i for i in range(start, stop) if len(grams[i])]
            out[rows] = np.minimum.reduceat(permuted, offsets, axis=0)
        start = stop
    return out


_BAND_MIX = np.uint64(0x100000001B3)  # FNV-1a's 64-bit prime: a band's rows folded into one 64-bit key


# kept texts' band keys waiting in dicts before they are merged into the sorted arrays (see _NearIndex)
_MERGE_AT = 8192


class NearIndex:
    """Kept texts' MinHash signatures in an LSH index (one table per band, as datasketch's MinHashLSH keeps
    them), plus their shingles to confirm candidates.

    A band is keyed by its rows folded into one 64-bit integer (datasketch keys it by the rows' bytes). On a
    100k-item job this index is the largest thing in memory: as Python dicts of ints its 14 tables took 1.2 KB
    per kept text (120 MB). So each table is a sorted numpy array of keys with their ids (12 bytes an entry),
    looked up for a whole block of texts in one ``searchsorted``, plus a small dict of the texts kept since the
    last merge (a text is compared with those kept before it in its own block too). Two different bands fold to
    the same key with a chance of 2**-64, and a candidate still counts only if its real Jaccard similarity is at
    or above the threshold."""

    def __init__(self, threshold: float, num_perm: int, seed: int):
        self.threshold, self.num_perm, self.seed = threshold, num_perm, seed
        self.band_count, self.rows = lsh_params(threshold, num_perm)
        self.keys = [np.zeros(0, dtype=np.uint64) for _ in range(self.band_count)]  # sorted, per band
        self.ids = [np.zeros(0, dtype=np.int64) for _ in range(self.band_count)]  # aligned with keys
        self.recent: list[dict[int, Any]] = [{} for _ in range(self.band_count)]  # key -> id, or a list of ids
        self.recent_keys: list[list[int]] = [[] for _ in range(self.band_count)]  # the same, as the next merge
        self.recent_ids: list[Any] = []  # takes them
        self.shingles: dict[Any, np.ndarray] = {}

    def prepare(self, keys: Sequence[str]) -> dict[str, tuple[np.ndarray, list[int], list[int]]]:
        """Normalised text -> (its shingles, its band keys, the ids kept in earlier merges that share a band),
        for many texts in one vectorised pass."""
        self._merge()
        grams = shingle_hashes(keys)
        signatures = minhash_signatures(grams, self.num_perm, self.seed)
        bands = signatures[:, :self.band_count * self.rows].reshape(len(keys), self.band_count, self.rows)
        folded = np.full((len(keys), self.band_count), 0xCBF29CE484222325, dtype=np.uint64)
        for row in range(self.rows):
            folded = (folded ^ bands[:, :, row].astype(np.uint64)) * _BAND_MIX  # wraps mod 2**64
        earlier: list[list[int]] = [[] for _ in keys]
        for band in range(self.band_count):
            table, ids = self.keys[band], self.ids[band]
            if not table.size:
                continue
            wanted = folded[:, band]
            low = np.searchsorted(table, wanted)
            hits = np.nonzero(table[np.minimum(low, table.size - 1)] == wanted)[0]
            for text in hits.tolist():
                start = stop = int(low[text])
                while stop < table.size and table[stop] == wanted[text]:  # texts sharing this band
                    stop += 1
                earlier[text].extend(ids[start:stop].tolist())
        return dict(zip(keys, zip(grams, folded.tolist(), earlier)))

    def add(self, ident: Any, grams: np.ndarray, bands: list[int], earlier: list[int]) -> tuple[float, Any] | None:
        """(similarity, id) of the most similar kept text at or above the threshold (earliest on a tie);
        or None, and then the text is kept and indexed."""
        candidates: set[Any] = set(earlier)
        for band, table in zip(bands, self.recent):
            found = table.get(band)
            if found is not None:
                if type(found) is list:
                    candidates.update(found)
                else:
                    candidates.add(found)
        best: tuple[float, Any] | None = None
        for candidate in candidates:
            similarity = jaccard(grams, self.shingles[candidate])
            if similarity >= self.threshold and (best is None or (similarity, -candidate) > (best[0], -best[1])):
                best = (similarity, candidate)
        if best is None:
            for band, table, pending in zip(bands, self.recent, self.recent_keys):
                found = table.get(band)
                if found is None:
                    table[band] = ident
                elif type(found) is list:
                    found.append(ident)
                else:
                    table[band] = [found, ident]
                pending.append(band)
            self.recent_ids.append(ident)
            self.shingles[ident] = grams
        return best

    def _merge(self) -> None:
        """The recent dicts into the sorted arrays, once they hold enough (only between blocks: a block's
        lookups in the arrays and its texts' lookups in the dicts must see one state)."""
        if len(self.recent_ids) < _MERGE_AT:
            return
        ids = np.array(self.recent_ids, dtype=np.int64)
        for band in range(self.band_count):
            keys = np.concatenate([self.keys[band], np.array(self.recent_keys[band], dtype=np.uint64)])
            order = np.argsort(keys, kind="stable")
            self.keys[band], self.ids[band] = keys[order], np.concatenate([self.ids[band], ids])[order]
            self.recent[band].clear()
            self.recent_keys[band].clear()
        self.recent_ids.clear()


def lsh_params(threshold: float, num_perm: int, recall: float = LSH_RECALL) -> tuple[int, int]:
    """LSH (bands, rows) that make a pair at exactly ``threshold`` a candidate with probability at least
    ``recall``, with as many rows per band (as few false candidates) as that allows.

    Why not datasketch's default: it weighs misses and false candidates equally and so finds only about
    half of the pairs at the threshold (46% at 0.85 with 128 permutations). False candidates cost one
    exact Jaccard each here, misses cost a duplicate in the training set."""
    for rows in range(num_perm // 2, 0, -1):
        bands = num_perm // rows
        if 1 - (1 - threshold ** rows) ** bands >= recall:
            return bands, rows
    return num_perm, 1
