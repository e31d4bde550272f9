"""The novelty filter against rouge_score itself: identical scores and decisions, pruning that never hides a
match."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from serl.selfinstruct.novelty import NoveltyIndex, length_window, rouge_l, rouge_tokens

rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer")
from rouge_score import tokenize  # noqa: E402  (after the skip guard)

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "math"
THRESHOLD = 0.7
SCORER = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def reference_f(target: str, prediction: str) -> float:
    return SCORER.score(target, prediction)["rougeL"].fmeasure


def _questions(name: str) -> list[str]:
    path = DATA / f"{name}.jsonl"
    if not path.exists():
        pytest.skip(f"shared data not found: {path}")
    rows = [json.loads(line) for line in path.open(encoding="utf-8")]
    return [r.get("question") or r.get("problem") for r in rows]


def _perturb(text: str, rng: random.Random, rate: float) -> str:
    """Drop, duplicate, replace or swap words (LaTeX included) at RATE: scores spread across the threshold."""
    words, out = text.split(), []
    for word in words:
        roll = rng.random()
        if roll < rate / 4:
            continue
        if roll < rate / 2:
            out += [word, word]
        elif roll < 3 * rate / 4:
            out.append(rng.choice(["\\frac{1}{2}", "$x^2$", "7", "triangle", "\\sqrt{3}", "the", "Σ", "{}"]))
        else:
            out.append(word)
    if len(out) > 2 and rng.random() < rate:
        i = rng.randrange(len(out) - 1)
        out[i], out[i + 1] = out[i + 1], out[i]
    return " ".join(out)


def _boundary_pairs() -> list[tuple[str, str]]:
    """Pairs whose F is exactly the threshold in real arithmetic (2·lcs/(m+n) = 0.7): only float rounding
    decides."""
    pairs = []
    for m in range(1, 41):
        for n in range(1, 41):
            for lcs in range(1, min(m, n) + 1):
                if 20 * lcs == 7 * (m + n):
                    common = [f"w{i}" for i in range(lcs)]
                    target = common + [f"a{i}" for i in range(m - lcs)]
                    prediction = [f"b{i}" for i in range(n - lcs)] + common
                    pairs.append((" ".join(target), " ".join(prediction)))
    return pairs


@pytest.fixture(scope="module")
def varied_pairs() -> list[tuple[str, str]]:
    rng = random.Random(1234)
    latex = _questions("math_500") + _questions("olympiadbench") + _questions("minerva_math")
    latex = [q for q in latex if q.count("\\") + q.count("$") >= 6]
    plain = _questions("gsm8k") + _questions("svamp") + _questions("college_math")
    pairs = []
    for _ in range(350):  # LaTeX-heavy near-duplicates
        q = rng.choice(latex)
        pairs.append((q, _perturb(q, rng, rng.uniform(0.0, 0.8))))
    for _ in range(300):  # plain near-duplicates
        q = rng.choice(plain)
        pairs.append((_perturb(q, rng, rng.uniform(0.0, 0.8)), q))
    for _ in range(250):  # unrelated pairs, mixed sources
        pairs.append((rng.choice(latex + plain), rng.choice(latex + plain)))
    for _ in range(100):  # case and punctuation only
        q = rng.choice(plain)
        pairs.append((q, q.upper().replace(",", " ; ").replace(".", "!")))
    pairs += _boundary_pairs()
    pairs += [
        ("", ""),
        ("", "What is 2 + 2?"),
        ("$$\\frac{}{}$$ \\\\ {}", "What is 2 + 2?"),  # no tokens at all
        ("KELVIN: 3 \u212a", "kelvin 3 k"),  # the Kelvin sign lower-cases to an ASCII k
        ("İstanbul has 15 million people", "istanbul has 15 million people"),
        ("naïve café problem 3", "na ve caf problem 3"),
        ("x_1 + x_2 = 10", "x 1 x 2 10"),
    ]
    assert len(pairs) >= 1000
    return pairs


def test_tokens_match_rouge_score(varied_pairs):
    for a, b in varied_pairs[:400] + varied_pairs[-20:]:
        assert rouge_tokens(a) == tokenize.tokenize(a, None)
        assert rouge_tokens(b) == tokenize.tokenize(b, None)


def test_scores_are_bit_identical_to_rouge_score(varied_pairs):
    mismatches = [(a, b) for a, b in varied_pairs if rouge_l(a, b) != reference_f(a, b)]
    assert mismatches == []


def test_index_decisions_equal_rouge_score_on_pairs(varied_pairs):
    """Each pair through the index (pruning on): the novelty decision equals rouge_score's, both
    orientations."""
    above = 0
    for a, b in varied_pairs:
        for candidate, entry in ((a, b), (b, a)):
            index = NoveltyIndex(THRESHOLD)
            index.add("entry", entry)
            expected = reference_f(entry, candidate)
            result = index.score(candidate)
            assert result.novel == (expected <= THRESHOLD), (candidate, entry, expected, result)
            if not result.novel:
                assert result.score == expected and result.nearest == "entry"
            above += expected > THRESHOLD
    assert above > 200  # the set really straddles the threshold


def test_boundary_pairs_follow_the_float_arithmetic():
    """At F = 0.7 exactly, rouge_score's rounding lands on both sides of the threshold; the index follows
    it."""
    pairs = _boundary_pairs()
    outcomes = set()
    for a, b in pairs:
        index = NoveltyIndex(THRESHOLD)
        index.add(0, b)
        expected = reference_f(b, a)
        outcomes.add(expected > THRESHOLD)
        assert index.score(a).novel == (expected <= THRESHOLD)
    assert outcomes == {True, False}


def test_sequential_filtering_matches_the_reference_loop():
    """The reference's loop: each candidate vs seeds + accepted so far; accepted ones join the comparison
    set."""
    rng = random.Random(7)
    seeds = rng.sample(_questions("math_500"), 40)
    candidates = []
    for _ in range(60):
        source = rng.choice(seeds + candidates) if candidates and rng.random() < 0.7 else rng.choice(seeds)
        candidates.append(_perturb(source, rng, rng.uniform(0.05, 0.6)))
    candidates += rng.sample(_questions("olympiadbench"), 6)

    reference_set, expected = list(seeds), []
    for candidate in candidates:
        best = max(reference_f(candidate, other) for other in reference_set)
        expected.append(best <= THRESHOLD)
        if best <= THRESHOLD:
            reference_set.append(candidate)

    index = NoveltyIndex(THRESHOLD)
    index.add_many((f"seed:{i}", s) for i, s in enumerate(seeds))
    one_by_one = [index.check_and_add(f"gen:{i}", c) for i, c in enumerate(candidates)]
    assert [r.novel for r in one_by_one] == expected

    batched = NoveltyIndex(THRESHOLD)  # the batched call: same results, same final contents
    batched.add_many((f"seed:{i}", s) for i, s in enumerate(seeds))
    half = len(candidates) // 2
    results = batched.check_and_add_many([(f"gen:{i}", c) for i, c in enumerate(candidates[:half])])
    results += batched.check_and_add_many([(f"gen:{i}", c) for i, c in enumerate(candidates) if i >= half])
    assert [r.novel for r in results] == expected
    assert [r.score for r in results if not r.novel] == [r.score for r in one_by_one if not r.novel]
    assert sorted(batched.keys()) == sorted(index.keys())
    with pytest.raises(KeyError):
        batched.check_and_add_many([("seed:0", "already indexed")])
    assert 10 < sum(expected) < len(expected) - 10, sum(expected)


def test_exact_max_reports_the_true_maximum_and_nearest():
    index = NoveltyIndex(THRESHOLD)
    texts = {
        "short": "find x",
        "close": "find the value of x when x plus 2 is 5",
        "far": "a b c d e f g h i j k l m n o",
    }
    for key, text in texts.items():
        index.add(key, text)
    candidate = "find the value of y when y plus 2 is 5"
    pruned, exact = index.score(candidate), index.score(candidate, exact_max=True)
    assert pruned == exact
    assert exact.nearest == "close" and exact.score == reference_f(texts["close"], candidate)
    # An entry outside the length window is skipped unless exact_max is set.
    lonely = NoveltyIndex(THRESHOLD)
    lonely.add("short", "find x")
    assert lonely.score(candidate).nearest is None
    assert lonely.score(candidate, exact_max=True).score == reference_f("find x", candidate) > 0


def test_add_discard_and_contains():
    index = NoveltyIndex(THRESHOLD)
    index.add_many([(1, "what is two plus two"), (2, "what is two plus three"), (3, "name a prime")])
    assert len(index) == 3 and 2 in index and index.text(3) == "name a prime"
    assert not index.score("What is two plus two?").novel
    index.discard(1)
    index.discard(2)
    index.discard(99)  # absent: no error
    assert len(index) == 1 and 1 not in index
    assert index.score("What is two plus two?").novel
    with pytest.raises(KeyError):
        index.add(3, "again")
    with pytest.raises(ValueError):
        NoveltyIndex(1.5)


def test_length_window_never_excludes_a_possible_match():
    for threshold in (0.3, 0.5, 0.7, 0.9):
        for n in range(1, 80):
            lo, hi = length_window(n, threshold)
            for m in range(1, 200):
                possible = 2 * min(m, n) / (m + n) > threshold
                if possible:
                    assert lo <= m <= hi, (threshold, n, m)


WORDS = st.sampled_from(["x", "X", "2", "the", "\\frac", "{1}", "$", "a_1", "é", "prime", "Prime!", "7,"])


@settings(max_examples=300, deadline=None)
@given(st.lists(WORDS, max_size=25), st.lists(WORDS, max_size=25))
def test_property_equal_to_rouge_score(a_words, b_words):
    a, b = " ".join(a_words), " ".join(b_words)
    assert rouge_l(a, b) == reference_f(a, b)
    index = NoveltyIndex(THRESHOLD)
    index.add("b", b)
    assert index.score(a).novel == (reference_f(b, a) <= THRESHOLD)
