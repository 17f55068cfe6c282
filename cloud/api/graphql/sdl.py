"""Print the GraphQL schema's SDL: `python -m dockyard.cloud.api.graphql.sdl > schema.graphql`.

The SDL is committed beside this file; a test keeps it current, so a schema change shows up
in review as a change of that file."""

from pathlib import Path

from .schema import build_schema

SDL_FILE = Path(__file__).with_name("schema.graphql")


def sdl() -> str:
    return build_schema().as_str() + "\n"


if __name__ == "__main__":
    print(sdl(), end="")
