"""The ROUGE-L novelty filter (serl-reference §1.5), fast and with `rouge_score`'s exact decisions.

`rouge_score.RougeScorer(["rougeL"])` lower-cases, keeps runs of [a-z0-9] as tokens, and computes
F = 2·P·R / (P + R) with P = LCS/len(prediction), R = LCS/len(target), all in float64. The reference rejects a
candidate when the max F over its comparison set exceeds 0.7.

Here each distinct token becomes one character, so the token-level LCS is rapidfuzz's bit-parallel `LCSseq` on
short strings, computed in C for one candidate against many entries at once. The entries are kept sorted by
token count, and only those whose length could give F above the threshold are compared: F = 2·LCS/(m+n) ≤
2·min(m,n)/(m+n), so with n tokens in the candidate only entries with t·n/(2−t) < m < n·(2−t)/t can exceed t.
The window is widened to whole numbers, so float rounding can never hide an entry, and F is then computed with
the same float operations as `rouge_score`: the decisions are identical, not approximately equal."""

from __future__ import annotations

import bisect
import math
import re
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from rapidfuzz.distance import LCSseq
from rapidfuzz.process import cdist

_LCS = LCSseq.similarity
_TOKEN = re.compile(r"[a-z0-9]+")
_SURROGATES = 0x800  # code points 0xD800-0xDFFF are skipped when numbering tokens
_MAX_TOKENS = 0x110000 - _SURROGATES


def rouge_tokens(text: str) -> list[str]:
    """`rouge_score`'s default tokenisation (no stemming): lower-case, then the runs of [a-z0-9]."""
    return _TOKEN.findall(text.lower())


def rouge_l_fmeasure(lcs: int, target_len: int, prediction_len: int) -> float:
    """ROUGE-L F from an LCS length, with `rouge_score`'s arithmetic (0.0 when either side has no tokens)."""
    if target_len == 0 or prediction_len == 0:
        return 0.0
    precision = lcs / prediction_len
    recall = lcs / target_len
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def rouge_l(target: str, prediction: str) -> float:
    """ROUGE-L F of two texts, equal to `RougeScorer(["rougeL"]).score(target,
    prediction)["rougeL"].fmeasure`."""
    a, b = rouge_tokens(target), rouge_tokens(prediction)
    vocab: dict[str, str] = {}
    code_a, code_b = (_encode(tokens, vocab) for tokens in (a, b))
    return rouge_l_fmeasure(LCSseq.similarity(code_a, code_b), len(a), len(b))


def length_window(n: int, threshold: float) -> tuple[int, int]:
    """Inclusive token-count bounds [lo, hi] outside which an entry cannot score F > threshold against n
    tokens."""
    if threshold <= 0:
        return 1, 1 << 62
    lo = max(1, math.floor(threshold * n / (2 - threshold)))
    hi = math.ceil(n * (2 - threshold) / threshold)
    return lo, hi


def _encode(tokens: list[str], vocab: dict[str, str]) -> str:
    """One character per distinct token (numbered in order of first sight), so string LCS = token LCS."""
    chars = []
    for token in tokens:
        char = vocab.get(token)
        if char is None:
            number = len(vocab)
            if number >= _MAX_TOKENS:
                raise OverflowError(f"the novelty index holds more than {_MAX_TOKENS} distinct words")
            char = chr(number if number < 0xD800 else number + _SURROGATES)
            vocab[token] = char
        chars.append(char)
    return "".join(chars)


@dataclass(frozen=True)
class NoveltyResult:
    novel: bool  # no compared entry has F > threshold
    score: float  # the highest F found (see NoveltyIndex.score for which entries are compared)
    nearest: Hashable | None  # the key of an entry with that score; None if nothing was compared


class NoveltyIndex:
    """Texts under unique keys, scored against candidates by ROUGE-L F. Add and discard at any time.

    `check_and_add` is the reference's per-candidate step: score against everything in the index, and add the
    candidate if it is novel, so later candidates of the same batch are compared with it too.
    """

    def __init__(self, threshold: float = 0.7) -> None:
        if not 0.0 <= threshold < 1.0:
            raise ValueError(f"the ROUGE-L threshold must be in [0, 1), got {threshold}")
        self.threshold = threshold
        self._vocab: dict[str, str] = {}
        self._texts: dict[Hashable, str] = {}
        self._length_of: dict[Hashable, int] = {}
        # Parallel lists sorted by token count, so a length window is a contiguous slice.
        self._lengths: list[int] = []
        self._codes: list[str] = []
        self._keys: list[Hashable] = []

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._texts

    def keys(self) -> list[Hashable]:
        return list(self._texts)

    def text(self, key: Hashable) -> str:
        return self._texts[key]

    def add(self, key: Hashable, text: str) -> None:
        if key in self._texts:
            raise KeyError(f"{key!r} is already in the novelty index")
        tokens = rouge_tokens(text)
        code = _encode(tokens, self._vocab)
        position = bisect.bisect_right(self._lengths, len(tokens))
        self._lengths.insert(position, len(tokens))
        self._codes.insert(position, code)
        self._keys.insert(position, key)
        self._texts[key] = text
        self._length_of[key] = len(tokens)

    def add_many(self, items: Iterable[tuple[Hashable, str]]) -> None:
        for key, text in items:
            self.add(key, text)

    def discard(self, key: Hashable) -> None:
        """Remove KEY if present."""
        if key not in self._texts:
            return
        length = self._length_of.pop(key)
        del self._texts[key]
        start, stop = bisect.bisect_left(self._lengths, length), bisect.bisect_right(self._lengths, length)
        position = start + self._keys[start:stop].index(key)
        del self._lengths[position], self._codes[position], self._keys[position]

    def score(self, text: str, *, exact_max: bool = False) -> NoveltyResult:
        """Score TEXT against the index. The decision is always exact. By default only entries whose token
        count could give F > threshold are compared, so `score` is exact whenever it exceeds the threshold and
        otherwise the highest among those entries (0.0 with `nearest` None when there are none);
        `exact_max=True` compares every entry."""
        tokens = rouge_tokens(text)
        best_score, nearest = self._best_matches([_encode(tokens, self._vocab)], [len(tokens)], exact_max)[0]
        return NoveltyResult(best_score <= self.threshold, best_score, nearest)

    def check_and_add(self, key: Hashable, text: str) -> NoveltyResult:
        result = self.score(text)
        if result.novel:
            self.add(key, text)
        return result

    def check_and_add_many(self, items: Sequence[tuple[Hashable, str]]) -> list[NoveltyResult]:
        """`check_and_add` for each item in order, with the same results, but the comparisons with the entries
        already indexed run as a few batched calls (several times faster for more than a handful of items)."""
        keys = [key for key, _ in items]
        if len(set(keys)) < len(keys) or any(key in self._texts for key in keys):
            raise KeyError("check_and_add_many needs keys that are unique and not yet in the index")
        tokens = [rouge_tokens(text) for _, text in items]
        codes = [_encode(t, self._vocab) for t in tokens]
        against_index = self._best_matches(codes, [len(t) for t in tokens], exact_max=False)
        batch = NoveltyIndex(self.threshold)  # the items accepted so far in this call
        batch._vocab = self._vocab
        results = []
        for (key, text), (index_score, index_nearest) in zip(items, against_index, strict=True):
            batch_result = batch.score(text)
            if batch_result.score > index_score:
                index_score, index_nearest = batch_result.score, batch_result.nearest
            result = NoveltyResult(index_score <= self.threshold, index_score, index_nearest)
            if result.novel:
                batch.add(key, text)
            results.append(result)
        for key, text in items:
            if key in batch:
                self.add(key, text)
        return results

    def _best_matches(
        self, codes: list[str], lengths: list[int], exact_max: bool
    ) -> list[tuple[float, Hashable | None]]:
        """(max F, key) of each encoded candidate against the entries in its length window (or all entries).
        Candidates of similar length share one rapidfuzz call over their joint window."""
        best: list[tuple[float, Hashable | None]] = [(0.0, None)] * len(codes)
        order = [i for i in sorted(range(len(codes)), key=lengths.__getitem__) if lengths[i] > 0]
        for group in _similar_length_groups(order, lengths):
            start, stop = self._entries_between(lengths[group[0]], lengths[group[-1]], exact_max)
            if start >= stop:
                continue
            group_codes = [codes[i] for i in group]
            lcs = cdist(group_codes, self._codes[start:stop], scorer=_LCS, dtype=np.int64, workers=1)
            entry_lengths = np.asarray(self._lengths[start:stop], dtype=np.int64)
            scores = _fmeasures(lcs, entry_lengths, np.asarray([lengths[i] for i in group])[:, None])
            columns = np.argmax(scores, axis=1)
            for row, i in enumerate(group):
                best[i] = (float(scores[row, columns[row]]), self._keys[start + int(columns[row])])
        return best

    def _entries_between(self, shortest: int, longest: int, exact_max: bool) -> tuple[int, int]:
        """The entries that candidates of SHORTEST..LONGEST tokens could exceed the threshold with."""
        if exact_max:
            return 0, len(self._keys)
        lo, hi = length_window(shortest, self.threshold)[0], length_window(longest, self.threshold)[1]
        return bisect.bisect_left(self._lengths, lo), bisect.bisect_right(self._lengths, hi)


def _similar_length_groups(order: list[int], lengths: list[int], size: int = 64) -> list[list[int]]:
    """Split candidate indices sorted by length into groups of at most SIZE whose lengths are within 25% (+2),
    so a group's joint window is barely wider than each member's own."""
    groups: list[list[int]] = []
    for i in order:
        if groups and len(groups[-1]) < size and lengths[i] <= 1.25 * lengths[groups[-1][0]] + 2:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def _fmeasures(lcs: np.ndarray, entry_lengths: np.ndarray, candidate_len: np.ndarray) -> np.ndarray:
    """`rouge_l_fmeasure` element-wise, with the candidate as the prediction and the entries as targets. The
    float64 operations are those of the scalar version (and F does not depend on which side is which, bit for
    bit: scaling by 2 is exact and + and * commute)."""
    precision = lcs / candidate_len
    recall = lcs / entry_lengths
    with np.errstate(invalid="ignore", divide="ignore"):
        scores = 2 * precision * recall / (precision + recall)
    return np.where(lcs > 0, scores, 0.0)
