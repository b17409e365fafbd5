import pytest

from longreach.tasks import scoring


@pytest.mark.parametrize(
    ("prediction", "gold", "found"),
    [
        ("The pass key is 7.", "7", True),
        ("The pass key is 17.", "7", False),
        ("71", "7", False),
        ("7,", "7", True),
        ("value: 1234567\n", "1234567", True),
        ("12345678", "1234567", False),
        ("quiet-lantern", "quiet-lantern", True),
        ("quiet-lanterns", "quiet-lantern", False),
        ("QUIET-LANTERN.", "quiet-lantern", True),
        ("id 3f2a-11", "3f2a-11", True),
        ("id 3f2a-111", "3f2a-11", False),
    ],
)
def test_contains_respects_token_boundaries(prediction, gold, found):
    assert scoring.contains(prediction, gold) is found


def test_match_all_is_recall_and_match_any_is_presence():
    assert scoring.match_all(("11", "22", "33", "44"), "11 and 33, also 222") == 0.5
    assert scoring.match_any(("Paris", "paris, france"), "It is PARIS.") == 1.0
    assert scoring.match_any(("Paris",), "Parisian") == 0.0
    assert scoring.match_all((), "anything") == 0.0


def test_control_characters_are_newlines_before_matching():
    assert scoring.contains("\x0212345\x03", "12345")
