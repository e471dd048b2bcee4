import pytest

from smartseg.worker.pipeline.prompt import GENERIC_PHRASE, ParsedPrompt, parse_prompt


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # no qualifiers: only lower-cased, articles dropped
        ("shoe", ParsedPrompt("shoe")),
        ("The Red Shoe", ParsedPrompt("red shoe")),
        ("  a   dog ", ParsedPrompt("dog")),
        ("an apple!", ParsedPrompt("apple")),
        ("cup on the table", ParsedPrompt("cup on table")),
        # positions and their synonyms
        ("left shoe", ParsedPrompt("shoe", position="left")),
        ("leftmost shoe", ParsedPrompt("shoe", position="left")),
        ("left-most shoe", ParsedPrompt("shoe", position="left")),
        ("left most shoe", ParsedPrompt("shoe", position="left")),
        ("the rightmost car", ParsedPrompt("car", position="right")),
        ("topmost shape", ParsedPrompt("shape", position="top")),
        ("uppermost bird", ParsedPrompt("bird", position="top")),
        ("highest cloud", ParsedPrompt("cloud", position="top")),
        ("bottom-most box", ParsedPrompt("box", position="bottom")),
        ("lowest shelf", ParsedPrompt("shelf", position="bottom")),
        ("middle cat", ParsedPrompt("cat", position="center")),
        ("centre cat", ParsedPrompt("cat", position="center")),
        ("the cat in the center", ParsedPrompt("cat", position="center")),
        ("the circle on the left side", ParsedPrompt("circle", position="left")),
        ("the square to the right", ParsedPrompt("square", position="right")),
        ("Shoe, on the LEFT.", ParsedPrompt("shoe", position="left")),
        # corners
        ("top left shoe", ParsedPrompt("shoe", position="top-left")),
        ("top-right shoe", ParsedPrompt("shoe", position="top-right")),
        ("the shape in the bottom left corner", ParsedPrompt("shape", position="bottom-left")),
        ("lower right cup", ParsedPrompt("cup", position="bottom-right")),
        ("upper left cup", ParsedPrompt("cup", position="top-left")),
        ("left top cup", ParsedPrompt("cup", position="top-left")),
        ("top center cup", ParsedPrompt("cup", position="top")),
        # sizes
        ("largest shape", ParsedPrompt("shape", size="largest")),
        ("biggest dog", ParsedPrompt("dog", size="largest")),
        ("big dog", ParsedPrompt("dog", size="largest")),
        ("the smallest square", ParsedPrompt("square", size="smallest")),
        ("tiny dot", ParsedPrompt("dot", size="smallest")),
        ("little cup", ParsedPrompt("cup", size="smallest")),
        ("small red circle", ParsedPrompt("red circle", size="smallest")),
        # ordinals
        ("second from left shape", ParsedPrompt("shape", ordinal=2, ordinal_from="left")),
        ("second from the left shoe", ParsedPrompt("shoe", ordinal=2, ordinal_from="left")),
        ("third shoe from the right", ParsedPrompt("shoe", ordinal=3, ordinal_from="right")),
        ("2nd from top bottle", ParsedPrompt("bottle", ordinal=2, ordinal_from="top")),
        ("the 3rd cup from the bottom", ParsedPrompt("cup", ordinal=3, ordinal_from="bottom")),
        ("11th window from left", ParsedPrompt("window", ordinal=11, ordinal_from="left")),
        ("first circle", ParsedPrompt("circle", ordinal=1, ordinal_from="left")),
        ("second left circle", ParsedPrompt("circle", ordinal=2, ordinal_from="left")),
        ("second top circle", ParsedPrompt("circle", ordinal=2, ordinal_from="top")),
        ("second largest circle", ParsedPrompt("circle", size="largest", ordinal=2)),
        ("third smallest coin", ParsedPrompt("coin", size="smallest", ordinal=3)),
        (
            "second largest from the left",
            ParsedPrompt(GENERIC_PHRASE, size="largest", ordinal=2, ordinal_from="left"),
        ),
        # qualifiers only -> a generic phrase
        ("leftmost", ParsedPrompt(GENERIC_PHRASE, position="left")),
        ("the biggest one", ParsedPrompt(GENERIC_PHRASE, size="largest")),
        ("the left one", ParsedPrompt(GENERIC_PHRASE, position="left")),
        ("the red one", ParsedPrompt("red")),
        ("", ParsedPrompt(GENERIC_PHRASE)),
        # "from" not followed by a side stays in the phrase; a lone "from the left" is a position
        ("cup from kitchen", ParsedPrompt("cup from kitchen")),
        ("shape from the left", ParsedPrompt("shape", position="left")),
        # documented ambiguity: "right" is always a qualifier
        ("right triangle", ParsedPrompt("triangle", position="right")),
    ],
)
def test_parse_prompt(text: str, expected: ParsedPrompt) -> None:
    assert parse_prompt(text) == expected


def test_parse_prompt_is_deterministic() -> None:
    assert parse_prompt("Second shoe from the Right") == parse_prompt("second shoe from the right")
