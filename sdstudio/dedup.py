"""Exact and near-duplicate filtering of the items of one job.

Why: a model asked for many items on one topic repeats itself, and repeated training examples waste
budget and skew a fine-tune. Two checks in one pass over the texts, first occurrence wins:

* **Exact**: texts equal after :func:`normalize` (Unicode NFKC, casefold, whitespace runs collapsed
  to one space, punctuation and whitespace stripped from both ends), so "What is SQL?" and
  "  what is   sql" are the same item.
* **Near**: MinHash signatures of each normalised text's set of character 5-grams (:func:`shingle_hashes`),
  indexed in a MinHash LSH (datasketch's, computed in minhash.py) so candidates are found in about constant time per text
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


from .errors import ConfigError
from .store import Store

_BLOCK = 4096  # texts hashed per vectorised pass: bounds memory on big jobs
_SPACE = re.compile(r"\s+")


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


def similarity(a: str, b: str) -> float:
    """1.0 for texts equal after ``normalize``; else the Jaccard similarity of their character 5-gram sets (dedup's
    measure for near duplicates): how alike a chosen and a rejected answer, or a rewrite and its parent, are."""
    from .minhash import jaccard, shingle_hashes

    left, right = normalize(a), normalize(b)
    if left == right:
        return 1.0
    grams = shingle_hashes([left, right])
    return jaccard(grams[0], grams[1])


def _is_edge_noise(char: str) -> bool:
    return char == " " or unicodedata.category(char).startswith("P")


def find_duplicates(texts: Sequence[str], threshold: float = 0.85, *, num_perm: int = 128,
                    seed: int = 1) -> list[Duplicate]:
    """The duplicates among ``texts``, in index order. First occurrence wins: a text is compared only
    with earlier texts that were kept, so ``of`` is always kept. Among several near matches the most
    similar (then the earliest) is named. Deterministic. ``threshold`` in (0, 1]; 1.0 means exact only.
    A text equal after normalisation to an earlier near duplicate is reported like that one."""
    _check_threshold(threshold)
    keys = _normalized(texts)
    return _Seen(threshold, num_perm, seed).add(keys, list(range(len(keys))))


def _normalized(texts: Sequence[str]) -> list[str]:
    keys = []
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise ConfigError(f"text #{index} is {type(text).__name__}, not a string")
        keys.append(normalize(text))
    return keys


class _Seen:
    """The texts kept so far, for exact and near matches: ``add`` takes more texts (normalised) at any time
    and answers exactly as one pass over all of them in order would (a job's rows checked as they arrive)."""

    def __init__(self, threshold: float, num_perm: int = 128, seed: int = 1):
        if isinstance(num_perm, bool) or not isinstance(num_perm, int) or num_perm < 2:
            raise ConfigError(f"num_perm must be an integer of at least 2, got {num_perm!r}")
        self.threshold, self.num_perm, self.seed = threshold, num_perm, seed
        self.near_index: Any = None  # built with the first texts: numpy is not imported before a job's first reply
        self.seen: dict[str, tuple[Any, str, float]] = {}  # normalised text -> (kept id, kind, similarity)

    def add(self, keys: Sequence[str], ids: Sequence[Any]) -> list[Duplicate]:
        """Duplicates among ``keys`` (named by ``ids``: Duplicate.index and .of are ids) of these and all
        earlier texts kept; the others are kept."""
        duplicates: list[Duplicate] = []
        if self.near_index is None and self.threshold < 1.0:
            from .minhash import NearIndex

            self.near_index = NearIndex(self.threshold, self.num_perm, self.seed)
        near_index, seen = self.near_index, self.seen
        for low in range(0, len(keys), _BLOCK):
            block = keys[low:low + _BLOCK]
            fresh = [key for key in block if key and key not in seen] if near_index else []
            signatures = near_index.prepare(fresh) if near_index else {}
            for key, ident in zip(block, ids[low:low + _BLOCK]):
                match = seen.get(key)
                if match is None:
                    found = near_index.add(ident, *signatures[key]) if near_index and key else None
                    if found is None:
                        seen[key] = (ident, "exact", 1.0)
                        continue
                    match = seen[key] = (found[1], "near", found[0])
                duplicates.append(Duplicate(ident, *match))
        return duplicates


def _check_threshold(threshold: float) -> None:
    if isinstance(threshold, bool) or not isinstance(threshold, Real) or not 0 < threshold <= 1:
        raise ConfigError(f"dedup threshold must be a number in (0, 1], got {threshold!r}; "
                          "0.85 is a good start, 1.0 removes exact duplicates only")


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
    return JobDedup(store, job_kind, job_id, fields, threshold).run()


class JobDedup:
    """``dedup_records`` for a job whose records keep arriving: each ``run`` checks only the ok records added
    since the last one against everything kept so far, which is exactly what one pass over all of them in id
    order decides. So a generation job dedups while its requests are in flight (on the engine's writer thread,
    after each write) and the pass after a round has only the last rows left. When the job's ok rows are not
    what it has seen plus newer ones (a row turned ok before the last one seen: a grounding check's verdict, a
    reviewer), it starts over with one pass over all of them, the way ``dedup_records`` always did."""

    def __init__(self, store: Store, job_kind: str, job_id: int, fields: Sequence[str] | None = None,
                 threshold: float = 0.85):
        _check_threshold(threshold)
        if isinstance(fields, str):
            fields = [fields]  # a lone field name, not its characters
        self.store, self.job_kind, self.job_id = store, job_kind, job_id
        self.fields, self.threshold = fields, threshold
        self._gave_up = False  # a check during the engine failed: the pass after the round does it all
        self._job_known = False
        self._counts_stale = False
        self._reset()

    def _reset(self) -> None:
        self._seen = _Seen(self.threshold)
        self._last_id = 0  # the highest record id checked
        self._kept = 0  # records checked and kept: the job's ok rows up to _last_id, while nothing else changed them
        self._has_field = False
        self._checked = self._exact = self._near = 0

    def run(self, *, recheck: bool = True) -> DedupReport:
        """Check the ok records not checked yet; filter their duplicates; the report counts every run so far.
        ``recheck``: first make sure the rows checked before are as they were (a count over the job's rows: the
        engine's hook leaves it to the run after the round, or a 100k-row job would count 100k rows per write)."""
        store = self.store
        if not self._job_known:  # once: a job's row holds its config (a 100k-topic job's is megabytes)
            store.get_job(self.job_kind, self.job_id)  # one-line StoreError for an unknown job or kind
            self._job_known = True
        if recheck and self._last_id and store.count_ok_through(self.job_kind, self.job_id, self._last_id) != self._kept:
            self._reset()
        rows = store.ok_outputs_after(self.job_kind, self.job_id, self._last_id)
        fields = self.fields
        if rows and fields is not None and not self._has_field:
            self._has_field = any(isinstance(output, dict) and any(name in output for name in fields)
                                  for _, output in rows)
            if not self._has_field:
                # Every text would be empty and all but one record filtered: surely a misspelt field name.
                present = sorted({name for _, output in rows if isinstance(output, dict) for name in output})
                raise ConfigError(f"no record of {self.job_kind} job {self.job_id} has the dedup field(s) "
                                  f"{', '.join(fields)}; its outputs have: {', '.join(present) or 'no fields'}")
        if rows:
            keys = [normalize(record_text(output, fields)) for _, output in rows]
            duplicates = self._seen.add(keys, [rid for rid, _ in rows])
            if duplicates:
                updates = []
                for dup in duplicates:
                    how = "exact" if dup.kind == "exact" else f"near, similarity {dup.similarity:.2f}"
                    updates.append((dup.index, f"duplicate of record #{dup.of} ({how})"))
                store.filter_if_ok(updates)  # only rows still ok: a reviewer or re-run may have changed some meanwhile
                self._counts_stale = True
            exact = sum(dup.kind == "exact" for dup in duplicates)
            self._checked += len(rows)
            self._exact += exact
            self._near += len(duplicates) - exact
            self._kept += len(rows) - len(duplicates)
            self._last_id = rows[-1][0]
        if recheck and self._counts_stale:  # the job's counts: once per round, not per write (a count of all rows)
            store.refresh_counts(self.job_kind, self.job_id)
            self._counts_stale = False
        if recheck:
            store.set_dedup_mark(self.job_id, self._mark())
        return DedupReport(checked=self._checked, exact=self._exact, near=self._near)

    def _mark(self) -> dict[str, Any]:
        return {"through": self._last_id, "kept": self._kept, "fields": list(self.fields or []) or None,
                "threshold": self.threshold}

    def settled(self) -> bool:
        """Is there provably nothing to check? True for a fresh ``JobDedup`` (a new process) over a job whose last
        complete pass, with these fields and threshold, saw exactly the ok rows the job has now: a re-run of a
        finished job then does not hash all its rows again to find no duplicate."""
        if self._last_id:  # this process checked rows already: its run() is what knows
            return False
        mark, mine = self.store.dedup_mark(self.job_id), self._mark()
        if mark is None or (mark.get("fields"), mark.get("threshold")) != (mine["fields"], mine["threshold"]):
            return False
        through = int(mark["through"])
        return (self.store.count_ok_through(self.job_kind, self.job_id, through) == mark["kept"]
                and not self.store.ok_after(self.job_kind, self.job_id, through))

    def warm_up(self) -> None:
        """Load what checking the first rows will need (numpy, the MinHash index), ahead of them: the engine runs
        this on its writer thread while the first requests await their replies."""
        self._seen.add([], [])

    def after_write(self) -> None:
        """The engine's hook after each batch of rows is written (on its writer thread). A failure here must not
        stop the requests: the next ``run`` starts over and meets it where the old pass after the round did."""
        if self._gave_up:
            return
        try:
            self.run(recheck=False)
        except Exception:  # noqa: BLE001 - raised again, if still true, by the run after the round
            self._gave_up = True
            self._reset()
