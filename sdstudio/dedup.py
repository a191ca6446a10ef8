"""Exact and near-duplicate filtering of the items of one job.

Why: a model asked for many items on one topic repeats itself, and repeated training examples waste
budget and skew a fine-tune. Two checks in one pass over the texts, first occurrence wins:

* **Exact**: texts equal after :func:`normalize` (Unicode NFKC, casefold, whitespace runs collapsed
  to one space, punctuation and whitespace stripped from both ends), so "What is SQL?" and
  "  what is   sql" are the same item.
* **Near**: MinHash signatures of each normalised text's set of character 5-grams (:func:`shingle_hashes`),
  indexed in a MinHash LSH (datasketch) so candidates are found in about constant time per text
  instead of comparing all pairs. LSH is approximate, so every candidate pair is confirmed with the
  real Jaccard similarity of the two shingle sets and kept only at or above the threshold.

Why character 5-grams rather than word 3-grams: items are short. Changing one word of a 30-word text
changes 3 of its 28 word 3-grams (Jaccard about 0.81, below the 0.85 default) but only about a tenth of
its character 5-grams (Jaccard about 0.9), and short texts have too few word n-grams to measure at all.
One shingle kind for every length also keeps similarities comparable between short and long texts.
Punctuation inside the text is kept in the shingles, so SQL or code that differs only in an operator
(``<`` vs ``>``) scores below 1.0 and, on short items, below the threshold.
"""
from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Real
from typing import Any

import numpy as np

from .errors import ConfigError
from .store import Store

SHINGLE_CHARS = 5
LSH_RECALL = 0.95  # chance that a pair exactly at the threshold is even compared
_BLOCK = 4096  # texts hashed per vectorised pass: bounds memory on big jobs
_SPACE = re.compile(r"\s+")
# Random odd 64-bit multipliers of the 5-gram hash; fixed so results never change between runs.
_GRAM_WEIGHTS = np.random.RandomState(20240605).randint(
    0, 1 << 62, SHINGLE_CHARS, dtype=np.uint64) * np.uint64(2) + np.uint64(1)


@dataclass(frozen=True)
class Duplicate:
    """``texts[index]`` repeats ``texts[of]``; ``of < index`` and ``of`` itself is kept."""

    index: int
    of: int
    kind: str  # "exact" | "near"
    similarity: float  # 1.0 for exact; Jaccard similarity of the shingle sets for near


@dataclass(frozen=True)
class DedupReport:
    """What :func:`dedup_records` did: ``checked`` ok records, of which it filtered ``removed``."""

    checked: int
    exact: int
    near: int

    @property
    def removed(self) -> int:
        return self.exact + self.near


def normalize(text: str) -> str:
    """The form in which two texts count as exact duplicates (see the module docstring)."""
    text = _SPACE.sub(" ", unicodedata.normalize("NFKC", text).casefold())
    start, end = 0, len(text)
    while start < end and _is_edge_noise(text[start]):
        start += 1
    while end > start and _is_edge_noise(text[end - 1]):
        end -= 1
    return text[start:end]


def _is_edge_noise(char: str) -> bool:
    return char == " " or unicodedata.category(char).startswith("P")


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


def find_duplicates(texts: Sequence[str], threshold: float = 0.85, *, num_perm: int = 128,
                    seed: int = 1) -> list[Duplicate]:
    """The duplicates among ``texts``, in index order. First occurrence wins: a text is compared only
    with earlier texts that were kept, so ``of`` is always kept. Among several near matches the most
    similar (then the earliest) is named. Deterministic. ``threshold`` in (0, 1]; 1.0 means exact only.
    A text equal after normalisation to an earlier near duplicate is reported like that one."""
    _check_threshold(threshold)
    if isinstance(num_perm, bool) or not isinstance(num_perm, int) or num_perm < 2:
        raise ConfigError(f"num_perm must be an integer of at least 2, got {num_perm!r}")
    keys = []
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise ConfigError(f"text #{index} is {type(text).__name__}, not a string")
        keys.append(normalize(text))
    near_index = _NearIndex(threshold, num_perm, seed) if threshold < 1.0 else None
    seen: dict[str, tuple[int, str, float]] = {}  # normalised text -> (kept index, kind, similarity)
    duplicates: list[Duplicate] = []
    for low in range(0, len(keys), _BLOCK):
        block = keys[low:low + _BLOCK]
        block_shingles = shingle_hashes(block) if near_index else []
        for index, key in enumerate(block, start=low):
            match = seen.get(key)
            if match is None:
                found = near_index.add(index, block_shingles[index - low]) if near_index and key else None
                if found is None:
                    seen[key] = (index, "exact", 1.0)
                    continue
                match = seen[key] = (found[1], "near", found[0])
            duplicates.append(Duplicate(index, *match))
    return duplicates


class _NearIndex:
    """Kept texts' MinHash signatures in an LSH index, plus their shingles to confirm candidates."""

    def __init__(self, threshold: float, num_perm: int, seed: int):
        from datasketch import MinHash, MinHashLSH

        self.threshold = threshold
        self.lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, params=lsh_params(threshold, num_perm))
        # One MinHash reused for every text: the index keeps only band hashes, never the object, and
        # building a MinHash per text would cost more than all the hashing.
        self.minhash = MinHash(num_perm=num_perm, seed=seed, hashfunc=int)
        self.empty = self.minhash.hashvalues.copy()
        self.shingles: dict[int, np.ndarray] = {}

    def add(self, index: int, grams: np.ndarray) -> tuple[float, int] | None:
        """(similarity, index) of the most similar kept text at or above the threshold (earliest on a
        tie); or None, and then the text is kept and indexed."""
        self.minhash.hashvalues = self.empty.copy()
        self.minhash.update_batch(grams.tolist())
        best: tuple[float, int] | None = None
        for candidate in self.lsh.query(self.minhash):
            similarity = jaccard(grams, self.shingles[candidate])
            if similarity >= self.threshold and (best is None or (similarity, -candidate) > (best[0], -best[1])):
                best = (similarity, candidate)
        if best is None:
            self.lsh.insert(index, self.minhash, check_duplication=False)
            self.shingles[index] = grams
        return best


def _check_threshold(threshold: float) -> None:
    if isinstance(threshold, bool) or not isinstance(threshold, Real) or not 0 < threshold <= 1:
        raise ConfigError(f"dedup threshold must be a number in (0, 1], got {threshold!r}; "
                          "0.85 is a good start, 1.0 removes exact duplicates only")


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


def record_text(output: Any, fields: Sequence[str] | None = None) -> str:
    """The text of a record's output that dedup compares: the ``fields`` values of a dict output joined
    with newlines (all its values, in key order, when ``fields`` is None). Non-string values are compact
    JSON so structured outputs (chat message lists) do not all collapse to one empty text."""
    if isinstance(output, dict):
        names = list(output) if fields is None else fields
        return "\n".join(_as_text(output[name]) for name in names if name in output)
    return _as_text(output)


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


def dedup_records(store: Store, job_kind: str, job_id: int, fields: Sequence[str] | None = None,
                  threshold: float = 0.85) -> DedupReport:
    """Mark duplicate ``ok`` records of a job as ``filtered`` (in id order, first wins), with the error
    "duplicate of record #<id> (exact)" or "... (near, similarity 0.91)". Records already filtered or
    failed are left alone, so running it again removes nothing more. Updates the job's counts."""
    _check_threshold(threshold)
    if isinstance(fields, str):
        fields = [fields]  # a lone field name, not its characters
    store.get_job(job_kind, job_id)  # one-line StoreError for an unknown job or kind
    rows = [(r["id"], r["output"]) for r in store.records(job_kind, job_id, status="ok")]
    if fields is not None and rows and not any(
            isinstance(output, dict) and any(name in output for name in fields) for _, output in rows):
        # Every text would be empty and all but one record filtered: surely a misspelt field name.
        present = sorted({name for _, output in rows if isinstance(output, dict) for name in output})
        raise ConfigError(f"no record of {job_kind} job {job_id} has the dedup field(s) "
                          f"{', '.join(fields)}; its outputs have: {', '.join(present) or 'no fields'}")
    duplicates = find_duplicates([record_text(output, fields) for _, output in rows], threshold)
    if duplicates:
        updates = []
        for dup in duplicates:
            how = "exact" if dup.kind == "exact" else f"near, similarity {dup.similarity:.2f}"
            updates.append((rows[dup.index][0], f"duplicate of record #{rows[dup.of][0]} ({how})"))
        store.filter_if_ok(updates)  # only rows still ok: a reviewer or re-run may have changed some meanwhile
        store.refresh_counts(job_kind, job_id)
    exact = sum(dup.kind == "exact" for dup in duplicates)
    return DedupReport(checked=len(rows), exact=exact, near=len(duplicates) - exact)
