"""Stop strings: a cheap check during decoding and the exact cut of text and token ids afterwards.

Convention (the same as vLLM with include_stop_str_in_output=False): the response token ids end with the token that
completes the first stop string; the text is their decoding with special tokens skipped, cut before that stop string.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def find_stop(text: str, stops: Sequence[str]) -> int:
    """Index of the earliest occurrence of any stop string in `text`, or -1."""
    hits = [index for stop in stops if stop and (index := text.find(stop)) >= 0]
    return min(hits, default=-1)


def decode(tokenizer: Any, token_ids: Sequence[int]) -> str:
    return tokenizer.decode(list(token_ids), skip_special_tokens=True)


class StopChecker:
    """Decides, one new token at a time, whether a row's text now holds a stop string.

    Decoding the whole response at every step costs O(length^2); a window of the last tokens suffices because a stop
    string of c characters spans at most c non-empty tokens. The window is generous (special tokens decode to nothing);
    `cut_at_stop` afterwards finds the exact position either way.
    """

    def __init__(self, tokenizer: Any, stops: Sequence[str]):
        self.tokenizer = tokenizer
        self.stops = [stop for stop in stops if stop]
        self.window = 2 * max((len(stop) for stop in self.stops), default=0) + 8

    def __bool__(self) -> bool:
        return bool(self.stops)

    def hit(self, token_ids: Sequence[int]) -> bool:
        return find_stop(decode(self.tokenizer, token_ids[-self.window :]), self.stops) >= 0


def cut_at_stop(tokenizer: Any, token_ids: list[int], stops: Sequence[str]) -> tuple[list[int], str, bool]:
    """(ids up to the token completing the first stop string, text cut before it, whether a stop string was found).

    Without a stop string in the decoded text, the ids are returned whole with their full text.
    """
    text = decode(tokenizer, token_ids)
    cut = find_stop(text, stops)
    if cut < 0:
        return token_ids, text, False
    # The shortest prefix whose text holds a stop string; prefixes only grow their text, so bisect.
    low, high = 1, len(token_ids)
    while low < high:
        mid = (low + high) // 2
        if find_stop(decode(tokenizer, token_ids[:mid]), stops) >= 0:
            high = mid
        else:
            low = mid + 1
    kept = token_ids[:low]
    text = decode(tokenizer, kept)
    return kept, text[: find_stop(text, stops)], True
