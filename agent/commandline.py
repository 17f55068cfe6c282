"""What the command lines (`dockyard-agent`, `dockyard`) share: `--json` anywhere on the line,
help that shows defaults and an example per command, tables with headers, shell completion.

Each rule is applied once to a finished parser tree (`finish`), not written into each of the
fifty-odd `add_parser` calls, so a new command gets them without knowing of them, and a test
can walk the same tree to prove every command has its example and every example parses.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, TextIO

JSON_HELP = "machine-readable output (accepted anywhere on the line)"


def _with_default(action: argparse.Action) -> None:
    """An option's help names its default when the default says something (not for flags,
    not where the help already names it); argparse shows no help at all for an option that
    has none, so the default becomes its help there."""
    default = action.default
    says_nothing = (
        default is None
        or isinstance(default, bool)
        or default is argparse.SUPPRESS
        or default in ([], "")
        or action.help is argparse.SUPPRESS
    )
    text = action.help or ""
    if action.option_strings and not says_nothing and "default" not in text:
        action.help = f"{text} (default: %(default)s)".strip()


def commands(
    ap: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser, bool]]:
    """Every parser of the tree with its command path and whether it is a leaf (a command
    that runs, not a group of them)."""
    groups = [a for a in ap._actions if isinstance(a, argparse._SubParsersAction)]
    yield path, ap, not groups
    for group in groups:
        seen: set[int] = set()
        for name, child in group.choices.items():
            if id(child) in seen:  # an alias
                continue
            seen.add(id(child))
            yield from commands(child, (*path, name))


def finish(ap: argparse.ArgumentParser, examples: Mapping[str, str]) -> argparse.ArgumentParser:
    """`--json` on every parser, defaulting to the top's, so `--json vm ls` and `vm ls --json`
    mean the same; each command's example (keyed by its path, `"vm ls"`) in its epilog; each
    option's default in its help; docstrings' line breaks kept."""
    for path, parser, _ in commands(ap):
        parser.formatter_class = argparse.RawDescriptionHelpFormatter
        for action in parser._actions:
            _with_default(action)
        own = [a for a in parser._actions if "--json" in a.option_strings]
        if not path:
            if not own:
                parser.add_argument("--json", action="store_true", help=JSON_HELP)
        elif own:
            # A lower parser's own default would overwrite what was said before it.
            own[0].default = argparse.SUPPRESS
            own[0].help = own[0].help or JSON_HELP
        else:
            parser.add_argument(
                "--json", action="store_true", default=argparse.SUPPRESS, help=JSON_HELP
            )
        example = examples.get(" ".join(path))
        if example:
            shown = "\n".join(f"  {line}" for line in example.splitlines())
            parser.epilog = f"{parser.epilog}\n\n" if parser.epilog else ""
            parser.epilog += f"example:\n{shown}"
    return ap


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], out: TextIO | None = None) -> None:
    """Columns padded to their widest cell under an upper-case header; the last column is not
    padded (it is often a free text). An empty listing prints only its header, so a script
    that skips one line still works and a reader sees which listing it was."""
    out = out or sys.stdout
    cells = [[str(h).upper() for h in headers]] + [
        ["-" if c is None or c == "" else str(c) for c in row] for row in rows
    ]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for r in cells:
        line = "  ".join(c.ljust(w) for c, w in zip(r[:-1], widths[:-1], strict=True))
        print(f"{line}  {r[-1]}" if len(r) > 1 else r[-1], file=out)


def emit(payload: Any, out: TextIO | None = None) -> None:
    """The one JSON form every listing prints with `--json`."""
    print(json.dumps(payload, indent=2, default=str), file=out or sys.stdout)


def completion(ap: argparse.ArgumentParser, shell: str) -> str:
    """The shell's completion script for this parser tree (shtab writes it from the parser
    itself, so it can never name a command that is gone)."""
    import shtab

    return str(shtab.complete(ap, shell=shell))


EXIT_PIPE = 141
"""128 + SIGPIPE, what a shell shows for a writer whose reader left."""


def reader_left() -> int:
    """`... | head` closed the pipe: say nothing more on it, and end as a writer whose reader
    left does (Python would otherwise complain again when it flushes at exit)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return EXIT_PIPE
