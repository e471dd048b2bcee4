"""Prompt parsing: split a prompt into the noun phrase a detector can look for and the qualifiers that
only the selector can apply ("left shoe" -> detect "shoe", keep the leftmost).

Rules (deterministic, first match wins):
- Text is lower-cased, punctuation and hyphens become spaces ("left-most" and "left most" -> "leftmost"),
  and articles ("the", "a", "an") are dropped.
- Position words: left/leftmost, right/rightmost, top/topmost/upper/uppermost/highest,
  bottom/bottommost/lower/lowest, center/centre/middle/central. A vertical and a horizontal word combine
  into a corner ("top left", "lower-right" -> "top-left", "bottom-right"); a corner or side beats "center".
  A preposition before the word and "side"/"corner"/"edge" after it go too ("on the left side").
- Size words: largest/biggest/big/large/huge -> "largest"; smallest/small/tiny/little -> "smallest".
- Ordinals: first..tenth or 1st, 2nd, 3rd, ... with an optional "from [the] left/right/top/bottom" anywhere
  ("second from left shoe", "third shoe from the right"). Without "from" an ordinal counts from a position
  word if there is one ("second left"), ranks by size if there is a size word ("second largest"), else
  counts from the left. An ordinal replaces the position.
- What is left is the phrase; a prompt of qualifiers only ("the leftmost one") becomes ``GENERIC_PHRASE``.
Known ambiguity: "right" and "top" are always qualifiers, so "right triangle" means the rightmost triangle.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Side = Literal["left", "right", "top", "bottom"]
Position = Literal[
    "left", "right", "top", "bottom", "center", "top-left", "top-right", "bottom-left", "bottom-right"
]
Size = Literal["largest", "smallest"]

GENERIC_PHRASE = "object"

_POSITION_WORDS: dict[str, Position] = {
    "left": "left",
    "leftmost": "left",
    "right": "right",
    "rightmost": "right",
    "top": "top",
    "topmost": "top",
    "upper": "top",
    "uppermost": "top",
    "highest": "top",
    "bottom": "bottom",
    "bottommost": "bottom",
    "lower": "bottom",
    "lowermost": "bottom",
    "lowest": "bottom",
    "center": "center",
    "centre": "center",
    "middle": "center",
    "central": "center",
    "centermost": "center",
    "centremost": "center",
}
_SIDES: dict[str, Side] = {"left": "left", "right": "right", "top": "top", "bottom": "bottom"}
_CORNERS: dict[tuple[str, str], Position] = {
    ("top", "left"): "top-left",
    ("top", "right"): "top-right",
    ("bottom", "left"): "bottom-left",
    ("bottom", "right"): "bottom-right",
}
_SIZE_WORDS: dict[str, Size] = {
    "largest": "largest",
    "biggest": "largest",
    "big": "largest",
    "bigger": "largest",
    "large": "largest",
    "larger": "largest",
    "huge": "largest",
    "smallest": "smallest",
    "small": "smallest",
    "smaller": "smallest",
    "tiny": "smallest",
    "tiniest": "smallest",
    "little": "smallest",
}
_ORDINAL_WORDS = {
    "first": 1,
    "second": 2,
    "third": 3,
    "fourth": 4,
    "fifth": 5,
    "sixth": 6,
    "seventh": 7,
    "eighth": 8,
    "ninth": 9,
    "tenth": 10,
}
_NUMERIC_ORDINAL = re.compile(r"([1-9]\d*)(st|nd|rd|th)")
_MOST_SUFFIX = re.compile(r"\b(left|right|top|bottom|upper|lower|center|centre)[\s-]*most\b")
_ARTICLES = frozenset({"the", "a", "an"})
_PREPOSITIONS = frozenset({"on", "at", "in", "to", "toward", "towards"})
_POSITION_NOUNS = frozenset({"side", "corner", "edge"})
_PRONOUNS = frozenset({"one", "ones"})


@dataclass(frozen=True)
class ParsedPrompt:
    phrase: str  # the noun phrase without qualifier words, e.g. "shoe"
    position: Position | None = None
    size: Size | None = None
    ordinal: int | None = None  # 1-based
    ordinal_from: Side | None = None  # set whenever ordinal is, unless the ordinal ranks by size


def _ordinal_value(word: str) -> int | None:
    match = _NUMERIC_ORDINAL.fullmatch(word)
    return int(match.group(1)) if match else _ORDINAL_WORDS.get(word)


def _combine_positions(positions: list[Position]) -> Position | None:
    vertical = next((p for p in positions if p in ("top", "bottom")), None)
    horizontal = next((p for p in positions if p in ("left", "right")), None)
    if vertical and horizontal:
        return _CORNERS[(vertical, horizontal)]
    return vertical or horizontal or (positions[0] if positions else None)


def parse_prompt(text: str) -> ParsedPrompt:
    """Parse one prompt; never fails (an unqualified prompt is all phrase)."""
    text = _MOST_SUFFIX.sub(r"\1most", text.lower())
    words = [w for w in re.sub(r"[\W_]+", " ", text).split() if w not in _ARTICLES]
    used = [False] * len(words)
    positions: list[Position] = []
    size: Size | None = None
    ordinal: int | None = None
    from_side: Side | None = None
    for i, word in enumerate(words):
        if used[i]:
            continue
        value = _ordinal_value(word)
        if value is not None and ordinal is None:
            ordinal, used[i] = value, True
        elif word == "from" and i + 1 < len(words) and _POSITION_WORDS.get(words[i + 1]) in _SIDES:
            from_side = _SIDES[_POSITION_WORDS[words[i + 1]]]
            used[i] = used[i + 1] = True
        elif word in _POSITION_WORDS:
            positions.append(_POSITION_WORDS[word])
            used[i] = True
            if i > 0 and words[i - 1] in _PREPOSITIONS:
                used[i - 1] = True
            if i + 1 < len(words) and words[i + 1] in _POSITION_NOUNS:
                used[i + 1] = True
        elif word in _SIZE_WORDS:
            size = size or _SIZE_WORDS[word]
            used[i] = True
    phrase_words = [w for w, done in zip(words, used, strict=True) if not done]
    if phrase_words and phrase_words[-1] in _PRONOUNS:
        phrase_words.pop()
    position = _combine_positions(positions)
    ordinal_from: Side | None = None
    if ordinal is not None:
        if from_side is None and size is None:
            from_side = _SIDES.get(position or "", "left")
        ordinal_from, position = from_side, None
    elif position is None:
        position = from_side
    return ParsedPrompt(" ".join(phrase_words) or GENERIC_PHRASE, position, size, ordinal, ordinal_from)
