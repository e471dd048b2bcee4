import copy

import numpy as np
import pytest

from smartseg.worker.pipeline.base import Candidate
from smartseg.worker.pipeline.prompt import ParsedPrompt, Position, Side
from smartseg.worker.pipeline.selector import select

IMAGE_SIZE = (400, 300)  # width, height


def box_at(cx: float, cy: float, half: float = 10) -> tuple[float, float, float, float]:
    return (cx - half, cy - half, cx + half, cy + half)


# A 3x3-ish layout; labels say where each box is. Scores are distinct so the plain order is known.
CANDIDATES = [
    Candidate("top-left", 0.5, box_at(40, 30)),
    Candidate("top-right", 0.9, box_at(360, 40)),
    Candidate("middle", 0.7, box_at(205, 155, half=30)),  # the biggest box
    Candidate("bottom-left", 0.6, box_at(60, 270, half=5)),  # the smallest box
    Candidate("bottom-right", 0.8, box_at(350, 260)),
]


def labels(picked: list[Candidate]) -> list[str]:
    return [c.label for c in picked]


def run(parsed: ParsedPrompt, max_masks: int = 3, candidates: list[Candidate] | None = None) -> list[str]:
    return labels(select(CANDIDATES if candidates is None else candidates, parsed, IMAGE_SIZE, max_masks))


def test_no_qualifier_returns_best_scores_up_to_max_masks() -> None:
    assert run(ParsedPrompt("x")) == ["top-right", "bottom-right", "middle"]
    assert run(ParsedPrompt("x"), max_masks=1) == ["top-right"]
    assert run(ParsedPrompt("x"), max_masks=10) == [
        "top-right",
        "bottom-right",
        "middle",
        "bottom-left",
        "top-left",
    ]


def test_no_candidates_or_no_room_selects_nothing() -> None:
    assert run(ParsedPrompt("x", position="left"), candidates=[]) == []
    assert run(ParsedPrompt("x"), max_masks=0) == []


@pytest.mark.parametrize(
    ("position", "expected"),
    [
        ("left", "top-left"),
        ("right", "top-right"),
        ("top", "top-left"),
        ("bottom", "bottom-left"),
        ("center", "middle"),
        ("top-left", "top-left"),
        ("top-right", "top-right"),
        ("bottom-left", "bottom-left"),
        ("bottom-right", "bottom-right"),
    ],
)
def test_position_picks_the_single_extreme_box_centre(position: Position, expected: str) -> None:
    assert run(ParsedPrompt("x", position=position)) == [expected]


def test_position_uses_the_box_centre_not_its_edge() -> None:
    wide = Candidate("wide", 0.9, (0, 100, 300, 120))  # left edge at 0 but centre at x=150
    narrow = Candidate("narrow", 0.1, (90, 0, 110, 20))  # centre at x=100
    assert run(ParsedPrompt("x", position="left"), candidates=[wide, narrow]) == ["narrow"]


def test_position_ties_go_to_the_higher_score() -> None:
    low = Candidate("low", 0.2, box_at(50, 50))
    high = Candidate("high", 0.8, box_at(50, 200))
    assert run(ParsedPrompt("x", position="left"), candidates=[low, high]) == ["high"]


def test_size_uses_box_area_without_masks() -> None:
    assert run(ParsedPrompt("x", size="largest")) == ["middle"]
    assert run(ParsedPrompt("x", size="smallest")) == ["bottom-left"]


def test_size_prefers_mask_area_over_box_area() -> None:
    big_box_thin_mask = np.zeros((300, 400), dtype=bool)
    big_box_thin_mask[0:100, 0] = True  # box 1x100 but only 100 pixels
    small_box_full_mask = np.zeros((300, 400), dtype=bool)
    small_box_full_mask[200:220, 200:220] = True  # 400 pixels
    thin = Candidate("thin", 0.5, (0, 0, 100, 100), big_box_thin_mask)
    full = Candidate("full", 0.5, (200, 200, 220, 220), small_box_full_mask)
    assert run(ParsedPrompt("x", size="largest"), candidates=[thin, full]) == ["full"]


@pytest.mark.parametrize(
    ("ordinal", "side", "expected"),
    [
        (1, "left", ["top-left"]),
        (2, "left", ["bottom-left"]),
        (3, "left", ["middle"]),
        (5, "left", ["top-right"]),
        (1, "right", ["top-right"]),
        (2, "right", ["bottom-right"]),
        (2, "top", ["top-right"]),
        (2, "bottom", ["bottom-right"]),
        (6, "left", []),  # out of range: no match
        (9, "top", []),
    ],
)
def test_ordinal_counts_box_centres_from_a_side(ordinal: int, side: Side, expected: list[str]) -> None:
    assert run(ParsedPrompt("x", ordinal=ordinal, ordinal_from=side)) == expected


def test_ordinal_without_side_ranks_by_size() -> None:
    assert run(ParsedPrompt("x", size="largest", ordinal=1)) == ["middle"]
    assert run(ParsedPrompt("x", size="smallest", ordinal=1)) == ["bottom-left"]
    assert run(ParsedPrompt("x", size="largest", ordinal=6)) == []


def test_ordinal_beats_position_and_size() -> None:
    parsed = ParsedPrompt("x", position="right", size="largest", ordinal=1, ordinal_from="left")
    assert run(parsed) == ["top-left"]


def test_position_beats_size() -> None:
    assert run(ParsedPrompt("x", position="right", size="smallest")) == ["top-right"]


def test_select_does_not_reorder_or_mutate_its_input() -> None:
    candidates = copy.deepcopy(CANDIDATES)
    for parsed in (
        ParsedPrompt("x", ordinal=2, ordinal_from="bottom"),
        ParsedPrompt("x", position="top-left"),
        ParsedPrompt("x", size="largest"),
        ParsedPrompt("x"),
    ):
        run(parsed, candidates=candidates)
    # Compared field by field with an untouched deep copy: neither the list nor any candidate changed.
    assert [vars(c) for c in candidates] == [vars(c) for c in CANDIDATES]
