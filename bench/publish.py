"""Where every bench leaves its result: a markdown file the README links, and the terminal."""

from __future__ import annotations

from pathlib import Path


def publish(path: Path, lines: list[str]) -> None:
    """Write ``lines`` to ``path`` (creating its folder) and print them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))
    print("\n".join(lines))
