import pytest

from shequ.config import ConfigError, interpolate


def test_a_placeholder_takes_its_default_when_the_variable_is_unset() -> None:
    assert interpolate("${SHEQU_X:amqp://h/}", {}) == "amqp://h/"


def test_a_set_variable_wins_over_the_default() -> None:
    assert interpolate({"a": ["${SHEQU_X:1}"]}, {"SHEQU_X": "2"}) == {"a": [2]}


def test_a_whole_value_placeholder_is_typed_like_yaml() -> None:
    assert interpolate("${SHEQU_DELAYS:[100, 300]}", {}) == [100, 300]


def test_a_placeholder_inside_text_stays_text() -> None:
    assert interpolate("127.0.0.1:${PORT:8080}", {}) == "127.0.0.1:8080"


def test_a_missing_variable_without_default_is_an_error() -> None:
    with pytest.raises(ConfigError, match="SHEQU_NOPE"):
        interpolate("${SHEQU_NOPE}", {})
