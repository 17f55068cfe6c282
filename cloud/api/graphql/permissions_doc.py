"""Print docs/permissions.md from the permission table and the mutations' declarations:
`python -m dockyard.cloud.api.graphql.permissions_doc > docs/permissions.md`. A test keeps
the committed file current, as it does the SDL."""

from pathlib import Path

from dockyard.cloud.domain.permissions import markdown

from .schema import mutation_needs

DOC_FILE = Path(__file__).resolve().parents[3] / "docs" / "permissions.md"


def document() -> str:
    return markdown(mutation_needs())


if __name__ == "__main__":
    print(document(), end="")
