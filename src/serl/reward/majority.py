"""Majority-vote self-reward over a group of responses to one prompt (serl-reference §2.3).

`eq(i, j)` is answer equivalence (both directions, not transitive) with `eq(i, i)` true. Each response's count is
the number of responses equivalent to it, itself included; the winner is the response with the highest count, ties
going to the lowest index; a response earns 1.0 when it is equivalent to the winner, else 0.0.

Two ways to compute it, with identical results:
- `reference`: the reference's own loop, which re-extracts both texts and runs math-verify for every pair.
- `fast`: extracts each text once, groups answers with the same canonical form (whose checks all come out the same),
  skips sympy for pairs that cheap value and structure checks prove different (`serl.reward.disproof`: values at
  probe points, interval ends, set members, element counts), checks one representative per remaining pair of forms
  with a cross-group memo, and expands the result to the full matrix.

Degenerate groups (no two responses agree: all distinct, all without an answer, or a single response): the reference
gives a one-hot reward on response 0. `no_majority="zero"` (default) gives every response 0.0 instead and reports no
majority answer, so a lucky first sample is never reinforced when the difficulty filter is off or widened;
`no_majority="first"` reproduces the reference. Either way `majority_ratio` is the reference's count/n (1/n here),
so the difficulty filter sees the same number.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

from serl.reward.choices import MAJORITY_METHODS, NO_MAJORITY, MajorityMethod, NoMajority
from serl.reward.disproof import certainly_different
from serl.reward.equivalence import equivalent_cached, verify_one_way
from serl.reward.extract import Answer, check_extractor, extract_raw
from serl.reward.limits import BUDGET_FACTOR, Budget, can_interrupt
from serl.reward.pool import default_num_workers, hard_limit, map_isolated, run_isolated

_CUT = object()


@dataclass
class GroupVote:
    rewards: list[float]  # one per response, 0.0 or 1.0
    majority_answer: str | None  # the winner's answer as written; None when there is no majority
    majority_ratio: float  # the winner's count / n (the difficulty filter's input)
    cluster_sizes: list[int]  # connected components of the equivalence graph, largest first
    answers: list[str | None]  # each response's extracted answer as written; None = no answer
    majority_index: int | None = None  # the winning response
    majority_size: int = 0  # the winner's count
    timed_out: bool = False  # some extraction or check was cut short by the time limit

    @property
    def has_majority(self) -> bool:
        return self.majority_size >= 2


def majority_vote(
    responses: Sequence[str],
    *,
    extractor: str = "math",
    method: MajorityMethod = "fast",
    prompt: str | None = None,
    score_prompt_and_response: bool = False,
    timeout_s: float = 5.0,
    no_majority: NoMajority = "zero",
) -> GroupVote:
    """Vote over one group of responses. See the module docstring for the rule and the degenerate cases.

    `score_prompt_and_response=True` scores `prompt + response`, as the reference does; a response without an answer
    then inherits the prompt's last number (serl-reference §2.2). By default only the response is scored, so a
    response with no answer of its own never joins a majority.

    `timeout_s` limits each extraction and each equivalence check; the group as a whole gets `3 × timeout_s`, after
    which unchecked pairs count as not equivalent (`timed_out` is then set). Safe from any thread.
    """
    _check_options(extractor, method, no_majority)
    texts = _texts(responses, prompt, score_prompt_and_response)
    if not can_interrupt():
        vote = partial(_vote_texts, extractor=extractor, method=method, timeout_s=timeout_s, no_majority=no_majority)
        on_timeout = partial(_timed_out_vote, no_majority=no_majority)
        return run_isolated(vote, texts, timeout_s=hard_limit(BUDGET_FACTOR * timeout_s), on_timeout=on_timeout)
    return _vote_texts(texts, extractor=extractor, method=method, timeout_s=timeout_s, no_majority=no_majority)


def score_groups(
    groups: Sequence[Sequence[str]],
    *,
    prompts: Sequence[str] | None = None,
    num_workers: int | None = None,
    extractor: str = "math",
    method: MajorityMethod = "fast",
    score_prompt_and_response: bool = False,
    timeout_s: float = 5.0,
    no_majority: NoMajority = "zero",
    progress: bool = False,
) -> list[GroupVote]:
    """`majority_vote` for every group, in a process pool (one worker per core unless `num_workers` says otherwise;
    0 or 1 runs in this process). A group whose worker overruns `3 × timeout_s` plus slack is killed and scores as
    if no two responses were equivalent, with `timed_out` set."""
    _check_options(extractor, method, no_majority)
    if prompts is not None and len(prompts) != len(groups):
        raise ValueError(f"{len(prompts)} prompts for {len(groups)} groups")
    items = [
        _texts(group, prompts[g] if prompts is not None else None, score_prompt_and_response)
        for g, group in enumerate(groups)
    ]
    vote = partial(_vote_texts, extractor=extractor, method=method, timeout_s=timeout_s, no_majority=no_majority)
    workers = default_num_workers() if num_workers is None else num_workers
    if workers <= 1 and can_interrupt():
        return [vote(texts) for texts in items]
    return map_isolated(
        vote,
        items,
        timeout_s=hard_limit(BUDGET_FACTOR * timeout_s),
        on_timeout=partial(_timed_out_vote, no_majority=no_majority),
        num_workers=max(1, workers),
        progress=progress,
    )


def _check_options(extractor: str, method: str, no_majority: str) -> None:
    check_extractor(extractor)
    if method not in MAJORITY_METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {', '.join(MAJORITY_METHODS)}")
    if no_majority not in NO_MAJORITY:
        raise ValueError(f"unknown no_majority {no_majority!r}; expected one of {', '.join(NO_MAJORITY)}")


def _texts(responses: Sequence[str], prompt: str | None, score_prompt_and_response: bool) -> list[str]:
    if not score_prompt_and_response:
        return list(responses)
    if prompt is None:
        raise ValueError("score_prompt_and_response=True needs the prompt")
    return [prompt + response for response in responses]


def _vote_texts(texts: list[str], *, extractor: str, method: str, timeout_s: float, no_majority: str) -> GroupVote:
    budget = Budget(timeout_s, total_s=BUDGET_FACTOR * timeout_s)
    equivalence = _equivalence_fast if method == "fast" else _equivalence_reference
    eq, answers = equivalence(texts, extractor, budget)
    return _decide(eq, answers, no_majority, budget.timed_out)


def _extract_within(text: str, extractor: str, budget: Budget) -> Answer | None:
    answer = budget.run(extract_raw, text, extractor, default=_CUT)
    return None if answer is _CUT else answer  # type: ignore[return-value]


def _equivalence_fast(texts: list[str], extractor: str, budget: Budget) -> tuple[list[list[bool]], list[str | None]]:
    by_text: dict[str, Answer | None] = {}
    for text in texts:
        if text not in by_text:
            by_text[text] = _extract_within(text, extractor, budget)
    answers = [by_text[text] for text in texts]

    clusters: dict[str, list[int]] = {}
    for i, answer in enumerate(answers):
        if answer is not None:
            clusters.setdefault(answer.canonical, []).append(i)
    # Largest clusters first: if a pathological answer spends the group's time budget, the checks that decide the
    # majority are already done. Without time-outs the order changes nothing.
    members = sorted(clusters.values(), key=len, reverse=True)

    n = len(texts)
    eq = [[i == j for j in range(n)] for i in range(n)]
    for cluster in members:
        representative = answers[cluster[0]]
        # Identical parses give identical checks, so one self-check decides every pair inside the cluster.
        if len(cluster) > 1 and equivalent_cached(representative, representative, budget):  # type: ignore[arg-type]
            _link(eq, cluster, cluster)
    for c, cluster in enumerate(members):
        for d in range(c + 1, len(members)):
            a, b = answers[cluster[0]], answers[members[d][0]]
            # Pairs that cheap value and structure checks prove different need no sympy (serl.reward.disproof).
            if budget.run(certainly_different, a, b, default=False):
                continue
            if equivalent_cached(a, b, budget):  # type: ignore[arg-type]
                _link(eq, cluster, members[d])
    return eq, [answer.text if answer else None for answer in answers]


def _link(eq: list[list[bool]], rows: list[int], cols: list[int]) -> None:
    for i in rows:
        for j in cols:
            eq[i][j] = eq[j][i] = True


def _equivalence_reference(
    texts: list[str], extractor: str, budget: Budget
) -> tuple[list[list[bool]], list[str | None]]:
    """The reference's pairwise loop: each check re-extracts both texts, as `math_metric` does."""
    cut_short: set[str] = set()  # texts whose extraction blew the limit once are not tried again

    def extract(text: str) -> Answer | None:
        if text in cut_short:
            return None
        answer = budget.run(extract_raw, text, extractor, default=_CUT)
        if answer is _CUT:
            cut_short.add(text)
            return None
        return answer  # type: ignore[return-value]

    def metric(gold_text: str, pred_text: str) -> bool | None:
        """One `math_metric([gold], [pred])` call; None where it raises because the gold side has no answer."""
        gold = extract(gold_text)
        if gold is None:
            return None
        pred = extract(pred_text)
        return pred is not None and budget.run(verify_one_way, gold, pred, default=False)

    answers = [extract(text) for text in texts]
    n = len(texts)
    eq = [[i == j for j in range(n)] for i in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            forward = metric(texts[i], texts[j])
            # An exception in the first call (no gold extracted) skips the swapped call.
            eq[i][j] = eq[j][i] = forward is not None and (forward or bool(metric(texts[j], texts[i])))
    return eq, [answer.text if answer else None for answer in answers]


def _decide(eq: list[list[bool]], answers: list[str | None], no_majority: str, timed_out: bool) -> GroupVote:
    n = len(eq)
    if n == 0:
        return GroupVote([], None, 0.0, [], [], timed_out=timed_out)
    counts = [sum(row) for row in eq]
    size = max(counts)
    winner: int | None = counts.index(size)  # ties go to the lowest index
    if size < 2 and no_majority == "zero":
        winner = None
    rewards = [1.0 if winner is not None and eq[winner][i] else 0.0 for i in range(n)]
    return GroupVote(
        rewards=rewards,
        majority_answer=answers[winner] if winner is not None else None,
        majority_ratio=size / n,
        cluster_sizes=_component_sizes(eq),
        answers=answers,
        majority_index=winner,
        majority_size=size,
        timed_out=timed_out,
    )


def _component_sizes(eq: list[list[bool]]) -> list[int]:
    seen: set[int] = set()
    sizes = []
    for start in range(len(eq)):
        if start in seen:
            continue
        seen.add(start)
        stack, size = [start], 0
        while stack:
            i = stack.pop()
            size += 1
            for j, linked in enumerate(eq[i]):
                if linked and j not in seen:
                    seen.add(j)
                    stack.append(j)
        sizes.append(size)
    return sorted(sizes, reverse=True)


def _timed_out_vote(texts: list[str], *, no_majority: str) -> GroupVote:
    n = len(texts)
    identity = [[i == j for j in range(n)] for i in range(n)]
    return _decide(identity, [None] * n, no_majority, timed_out=True)
