"""Free text a person types (names, notes, keys), checked before it reaches a column.

PostgreSQL's text types cannot hold NUL: a name with one reached psycopg and failed the
request with a generic error. Other control characters (tabs, newlines, escapes, C1 codes)
would be stored, and later split a log line or steer a terminal that prints them. Both are
refused here as `Invalid`, with the field named, so every transport answers its usual
"bad input" (GraphQL's `InvalidInput`) and nothing is stored. Lone surrogates, which no
encoder takes, are refused with them.
"""

from __future__ import annotations

import unicodedata

from .errors import Invalid

_REFUSED = frozenset({"Cc", "Cs"})


def plain(field: str, value: str) -> str:
    """`value` unchanged, or `Invalid` naming `field` when it holds a control character."""
    for position, char in enumerate(value):
        if unicodedata.category(char) in _REFUSED:
            raise Invalid(
                f"{field} may not contain control characters "
                f"(U+{ord(char):04X} at position {position})"
            )
    return value


def name(field: str, value: str, max_chars: int = 200) -> str:
    """A name: stripped of surrounding whitespace (a newline pasted with it), then plain
    text of 1 to `max_chars` characters."""
    value = plain(field, value.strip())
    if not 1 <= len(value) <= max_chars:
        raise Invalid(f"{field} has 1 to {max_chars} characters")
    return value
