"""Production's and the candidate's verdicts on the same uploads, side by side.

Pairs are made by event id: a detect stage derives its output id from the upload's, and
the replay keeps upload ids, so one id names both verdicts on one upload.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime

import numpy as np

from deeptrust.schemas.events import DeadLetterEvent, Detection
from deeptrust.streams.codec import EVENT_ID
from deeptrust.streams.stage import derived_event_id
from deeptrust.streams.topics import Topic


@dataclass(frozen=True)
class Comparison:
    """How the candidate differs from production on replayed traffic."""

    replayed: int
    compared: int
    """Uploads with a verdict from both models."""
    missing_in_production: int
    agreement: float
    """Share of compared uploads given the same label."""
    mean_shift: float
    """Mean of candidate minus production probability (signed: which way scores moved)."""
    mean_abs_shift: float
    max_abs_shift: float
    production_positive_rate: float
    candidate_positive_rate: float
    candidate_errors: int
    """Replayed uploads production gave a verdict on and the candidate dead-lettered."""
    shared_dead_letters: int
    """Replayed uploads the candidate dead-lettered and production has no verdict on either
    (a corrupt upload production dead-lettered too): the input's fault, not the candidate's."""
    production_processed: int
    """Replayed uploads production gave a verdict on: the error rate's denominator."""
    candidate_images_per_s: float | None
    """Throughput of the canary's detect stage, from its first to its last output; None
    when its verdicts came in a single batch (no measurement)."""

    @property
    def error_rate(self) -> float:
        """Share of the uploads production processed that the candidate dead-lettered."""
        if not self.production_processed:
            return 0.0
        return self.candidate_errors / self.production_processed

    def metrics(self) -> dict[str, float]:
        """Flat numbers for the tracking server, ``canary/<name>``."""
        values = {k: v for k, v in asdict(self).items() if v is not None}
        values["error_rate"] = self.error_rate
        return {f"canary/{name}": float(value) for name, value in values.items()}


def dead_lettered_outputs(
    letters: Iterable[DeadLetterEvent], stage: str = "detect", output: Topic = Topic.DETECTED
) -> list[str | None]:
    """The output id each dead-lettered input would have had (None: not identifiable).

    A dead letter keeps the input's headers, and with them its event id, even when the
    input itself could not be decoded.
    """
    ids: list[str | None] = []
    for letter in letters:
        input_id = letter.original_headers.get(EVENT_ID)
        ids.append(derived_event_id(input_id, stage, output) if input_id else None)
    return ids


def throughput(stamps: Sequence[datetime], max_batch: int) -> float | None:
    """Verdicts per second from their production times, if they span more than one batch.

    A detect stage writes a batch's verdicts together, after the whole batch; the spread of
    one batch's stamps measures serialisation, not inference. Only more verdicts than a
    batch holds prove that at least two batches were timed.
    """
    if len(stamps) <= max_batch:
        return None
    ordered = sorted(stamps)
    span_s = (ordered[-1] - ordered[0]).total_seconds()
    return (len(ordered) - 1) / span_s if span_s > 0 else None


def compare(
    production: Mapping[str, Detection],
    candidate: Mapping[str, Detection],
    replayed: int,
    dead_lettered: Collection[str | None],
    images_per_s: float | None,
) -> Comparison:
    """Compare verdicts keyed by output event id.

    ``dead_lettered`` holds the output ids of the uploads the candidate dead-lettered (see
    :func:`dead_lettered_outputs`); only those production gave a verdict on are the
    candidate's errors, the rest are shared dead letters.
    """
    shared = sorted(production.keys() & candidate.keys())
    ours = np.array([candidate[key].ai_probability for key in shared], np.float64)
    theirs = np.array([production[key].ai_probability for key in shared], np.float64)
    same = [candidate[key].label == production[key].label for key in shared]
    shift = ours - theirs
    empty = not shared
    errors = sum(1 for key in dead_lettered if key is not None and key in production)
    return Comparison(
        replayed=replayed,
        compared=len(shared),
        missing_in_production=len(candidate.keys() - production.keys()),
        agreement=0.0 if empty else float(np.mean(same)),
        mean_shift=0.0 if empty else float(shift.mean()),
        mean_abs_shift=0.0 if empty else float(np.abs(shift).mean()),
        max_abs_shift=0.0 if empty else float(np.abs(shift).max()),
        production_positive_rate=0.0
        if empty
        else float(np.mean([production[key].label == "ai_generated" for key in shared])),
        candidate_positive_rate=0.0
        if empty
        else float(np.mean([candidate[key].label == "ai_generated" for key in shared])),
        candidate_errors=errors,
        shared_dead_letters=len(dead_lettered) - errors,
        production_processed=len(production),
        candidate_images_per_s=images_per_s,
    )
