"""`infra/cloud.env.example` loads as systemd's EnvironmentFile= reads it, and names only
settings the cloud has: systemd takes a trailing `# ...` as part of the value, so a comment
there would become part of the database URL."""

from __future__ import annotations

import re
from pathlib import Path

from dockyard.cloud.settings import Settings

EXAMPLE = Path(__file__).resolve().parents[2] / "infra" / "cloud.env.example"
ASSIGNMENT = re.compile(r"^(?:# )?(DOCKYARD_[A-Z0-9_]+)=(\S*)$")


def test_every_line_is_a_comment_or_a_bare_assignment() -> None:
    for n, line in enumerate(EXAMPLE.read_text().splitlines(), 1):
        if not line or (line.startswith("#") and not ASSIGNMENT.match(line)):
            continue
        match = ASSIGNMENT.match(line)
        assert match, f"line {n} is neither a comment nor NAME=VALUE: {line!r}"
        assert "#" not in match.group(2), f"line {n}: a comment after the value: {line!r}"


def test_every_name_is_a_setting_of_the_cloud() -> None:
    known = {f"DOCKYARD_{name.upper()}" for name in Settings.model_fields}
    named = {
        m.group(1) for line in EXAMPLE.read_text().splitlines() if (m := ASSIGNMENT.match(line))
    }
    assert named
    assert named - known == set()
