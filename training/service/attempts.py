"""How many times each retrain request has been started, kept on disk across restarts.

A job that kills its process (out of memory, a segfault in a native library) never reaches
the consumer's error handling, so an in-memory count starts from zero after every restart
and the request is retried forever, blocking every request behind it. The count is written
*before* the job starts, so a start that never finished still counts, and the consumer
dead-letters the request once it has been started ``max_attempts`` times.

One small JSON object (request id to count), replaced atomically on every change: the file
is either the old or the new count, never half of one. One consumer owns a work directory.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from deeptrust.streams.atomic_file import write_atomically

log = logging.getLogger(__name__)
ATTEMPTS_FILE = "retrain-attempts.json"


class AttemptLog:
    """Started attempts per request id, in a JSON file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _read(self) -> dict[str, int]:
        try:
            loaded = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as error:  # never half-written; a hand edit, at worst
            log.warning("ignoring unreadable attempt log %s: %s", self.path, error)
            return {}
        if not isinstance(loaded, dict):
            log.warning("ignoring attempt log %s: not a JSON object", self.path)
            return {}
        return {str(k): int(v) for k, v in loaded.items() if isinstance(v, int)}

    def _write(self, counts: dict[str, int]) -> None:
        body = json.dumps(counts, indent=1, sort_keys=True).encode()
        write_atomically(self.path, lambda file: file.write(body))

    def count(self, request_id: str) -> int:
        """Attempts started so far for ``request_id`` (finished or not)."""
        return self._read().get(request_id, 0)

    def start(self, request_id: str) -> int:
        """Record one more attempt, on disk, before it starts; return its number (from 1)."""
        counts = self._read()
        counts[request_id] = counts.get(request_id, 0) + 1
        self._write(counts)
        return counts[request_id]

    def clear(self, request_id: str) -> None:
        """Forget ``request_id`` (it succeeded or was dead-lettered)."""
        counts = self._read()
        if counts.pop(request_id, None) is not None:
            self._write(counts)
