"""The depth check that runs before any JSON is parsed, on bodies sent without a token."""

from __future__ import annotations

from dockyard.cloud.api.bodies import depth_over


def test_brackets_in_strings_do_not_count_and_nesting_does() -> None:
    assert depth_over(b"[" * 100 + b"]" * 100, 64)
    assert not depth_over(b'{"a": "[[[[[[[[", "b": [1, [2]]}', 3)
    assert not depth_over(b'[["x\\"[[[[[["]]', 3), "an escaped quote does not end the string"


def test_an_unterminated_string_is_one_match_to_the_end() -> None:
    """Its brackets do not count (the parser refuses the body next). The scan used to
    restart at every quote of such a body: quadratic in its length, seconds of the event
    loop for 32 KB sent without a token. Times are not asserted; the shapes are."""
    assert not depth_over(b'"' + b"[" * 100_000, 64)
    assert depth_over(b"[" * 100 + b'"' + b"\\" * 9 + b'"x' * 50_000, 64)
    assert depth_over(b'{"' * 50_000, 64), "each quoted brace pair closes; the braces nest"
