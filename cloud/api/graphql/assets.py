"""GraphiQL's files, pinned, fetched from the npm registry at install time (`make` runs
`python -m dockyard.cloud.api.graphql.assets`), never from a CDN when the page loads: a cloud
without internet showed "Loading..." forever. The files land in `static/vendor/` (not
committed), with each package's licence beside them; the cloud serves them itself.

GraphiQL 3 is the last line with a browser build that needs no bundler (a UMD file over
React 18's UMD files); GraphiQL 4 and later ship ES modules with web workers only.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

VENDOR = Path(__file__).with_name("static") / "vendor"

# package@version -> {file in the package: name served under /graphql/static/}
PINS: dict[str, dict[str, str]] = {
    "react@18.3.1": {
        "umd/react.production.min.js": "react.production.min.js",
        "LICENSE": "LICENSE.react",
    },
    "react-dom@18.3.1": {
        "umd/react-dom.production.min.js": "react-dom.production.min.js",
        "LICENSE": "LICENSE.react-dom",
    },
    "graphiql@3.8.3": {
        "graphiql.min.js": "graphiql.min.js",
        "graphiql.min.css": "graphiql.min.css",
        "LICENSE": "LICENSE.graphiql",
    },
}
SERVED = frozenset(name for files in PINS.values() for name in files.values())


def present() -> bool:
    return all((VENDOR / name).is_file() for name in SERVED)


def fetch(target: Path = VENDOR) -> None:
    """`npm pack` each pinned package (the registry's tarball, checked against its
    integrity by npm) and keep only the files the page uses."""
    npm = shutil.which("npm")
    if npm is None:
        raise SystemExit("npm is needed to fetch GraphiQL's files (apt-get install npm)")
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for spec, files in PINS.items():
            out = subprocess.run(
                [npm, "pack", "--silent", spec],
                cwd=tmp,
                check=True,
                capture_output=True,
                text=True,
            ).stdout.split()[-1]
            with tarfile.open(Path(tmp) / out) as archive:
                for inner, name in files.items():
                    member = archive.extractfile(f"package/{inner}")
                    if member is None:
                        raise SystemExit(f"{spec} has no {inner}")
                    (target / name).write_bytes(member.read())
    print(f"GraphiQL's files in {target}", file=sys.stderr)


if __name__ == "__main__":
    fetch()
