"""Where every bench leaves its result (a markdown file the README links, and the terminal).

Also what names the machine it ran on, since rates move with the CPU.
"""

from __future__ import annotations

import platform
from pathlib import Path


def publish(path: Path, lines: list[str]) -> None:
    """Write ``lines`` to ``path`` (creating its folder) and print them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))
    print("\n".join(lines))


def cpu_model() -> str:
    """The CPU's model name, and whether it has VNNI (the int8 dot-product instructions)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "an unknown CPU"
    names = [line.split(":", 1)[1].strip() for line in info.splitlines() if "model name" in line]
    vnni = "with" if "vnni" in info else "without"
    return f"{names[0] if names else 'an unknown CPU'}, {vnni} VNNI"
