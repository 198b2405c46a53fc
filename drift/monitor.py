"""The drift processor's logic, free of Kafka: embeddings in, reports, alerts, requests out.

Per model version it first collects a reference window (a new version means a new
embedding space, so a new reference), fits the configured detectors on it, then judges
every following window: a drift report for each, an alert when the combined verdict is
drift, and a retrain request with the evidence when the cooldown allows one. Its durable
state (:class:`~deeptrust.schemas.events.DriftStateRecord`) says how far each model version's closed
windows reach per partition, so embeddings replayed after a restart are not counted twice.
Event ids derive from the model version and window index, so a replay emits the same ids.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from deeptrust.drift.cooldown import Cooldown
from deeptrust.drift.detectors import DriftDetector, build_detectors, combined
from deeptrust.drift.kl import DriftResult
from deeptrust.drift.reference import Reference, ReferenceStore
from deeptrust.drift.settings import DriftSettings
from deeptrust.drift.windows import Window, Windower
from deeptrust.schemas.events import (
    AlertEvent,
    DriftReportEvent,
    DriftStateRecord,
    DriftVerdict,
    DriftWindow,
    EmbeddingEvent,
    RetrainRequestEvent,
)
from deeptrust.streams.errors import InvalidInput, Reason
from deeptrust.streams.stage import Output
from deeptrust.streams.topics import Topic

log = logging.getLogger(__name__)
_NAMESPACE = uuid.UUID("0b6c2f52-2d0e-4c55-8f43-3f1f8e7d9a10")
SOURCE = "drift"


@dataclass(frozen=True)
class Embedded:
    """One embedding with its event time (Unix seconds) and where it was read."""

    event: EmbeddingEvent
    at: float
    partition: int
    offset: int


@dataclass
class _Tracker:
    """Everything the monitor keeps for one model version."""

    state: DriftStateRecord
    windower: Windower
    cooldown: Cooldown
    reference: Reference | None = None
    detectors: list[DriftDetector] = field(default_factory=list)


class DriftMonitor:
    """Turns a stream of embeddings into drift reports, alerts and retrain requests."""

    def __init__(
        self,
        settings: DriftSettings,
        references: ReferenceStore,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._references = references
        self._clock = clock
        self._trackers: dict[str, _Tracker] = {}
        self._changed: set[str] = set()

    def restore(self, states: Iterable[DriftStateRecord]) -> None:
        """Resume from the last committed state of each model version."""
        for state in states:
            self._trackers[state.key] = self._new_tracker(state)

    def add(self, item: Embedded) -> list[Output]:
        """Take one embedding; return what the window it closed (if any) produced."""
        event = item.event
        tracker = self._tracker(event.model, event.model_version)
        if item.offset <= tracker.state.closed_through.get(item.partition, -1):
            return []  # judged before a restart: its window's outputs are already committed
        values = event.values()
        if tracker.reference is not None and len(values) != tracker.reference.dimensions:
            raise InvalidInput(
                Reason.INCOMPATIBLE_EMBEDDING,
                f"{len(values)}-d vector, but the reference of {tracker.state.key} "
                f"is {tracker.reference.dimensions}-d",
            )
        window = tracker.windower.add(
            event.image_id, values, item.at, item.partition, item.offset, self._clock()
        )
        return self._close(tracker, window) if window else []

    def poll(self) -> list[Output]:
        """Close windows that aged out while the stream was quiet."""
        now = self._clock()
        outputs: list[Output] = []
        for tracker in self._trackers.values():
            window = tracker.windower.poll(now)
            if window is not None:
                outputs += self._close(tracker, window)
        return outputs

    def pending_offsets(self) -> dict[int, int]:
        """Per partition, the first offset some open window still holds."""
        pending: dict[int, int] = {}
        for tracker in self._trackers.values():
            for partition, offset in tracker.windower.first_offsets().items():
                pending[partition] = min(offset, pending.get(partition, offset))
        return pending

    def take_changed(self) -> list[DriftStateRecord]:
        """The states changed since the last call, to write with the outputs."""
        changed = [self._trackers[key].state.model_copy(deep=True) for key in sorted(self._changed)]
        self._changed.clear()
        return changed

    def _tracker(self, model: str, version: str) -> _Tracker:
        key = f"{model}@{version}"
        if key not in self._trackers:
            self._trackers[key] = self._new_tracker(
                DriftStateRecord(model=model, model_version=version)
            )
        return self._trackers[key]

    def _new_tracker(self, state: DriftStateRecord) -> _Tracker:
        reference = self._references.load(state.model, state.model_version)
        tracker = _Tracker(
            state=state,
            windower=self._windower(collecting=reference is None),
            cooldown=Cooldown(self._settings.cooldown_s, state.last_retrain_at),
        )
        if reference is not None:
            self._use(tracker, reference)
        return tracker

    def _windower(self, collecting: bool) -> Windower:
        size = self._settings.reference_size if collecting else self._settings.window_size
        return Windower(
            max_count=size,
            max_age_s=float("inf") if collecting else self._settings.max_age_s,
            min_count=size if collecting else self._settings.min_count,
        )

    def _use(self, tracker: _Tracker, reference: Reference) -> None:
        config = self._settings.detector_config()
        tracker.detectors = build_detectors(self._settings.detectors, reference.vectors, config)
        tracker.reference = reference
        tracker.state.reference_digest = reference.digest

    def _close(self, tracker: _Tracker, window: Window) -> list[Output]:
        state = tracker.state
        for partition, offset in window.last_offsets.items():
            state.closed_through[partition] = max(offset, state.closed_through.get(partition, -1))
        self._changed.add(state.key)
        if tracker.reference is None:
            return self._adopt_reference(tracker, window)
        return self._judge(tracker, window)

    def _adopt_reference(self, tracker: _Tracker, window: Window) -> list[Output]:
        state = tracker.state
        reference = Reference(state.model, state.model_version, window.vectors, window.image_ids)
        self._references.save(reference)
        self._use(tracker, reference)
        tracker.windower = self._windower(collecting=False)
        log.info(
            "reference for %s: %d embeddings, %s", state.key, len(window.vectors), reference.digest
        )
        alert = AlertEvent(
            event_id=self._event_id(state.key, "reference", 0),
            kind="drift-reference",
            severity="info",
            subject=state.key,
            summary=f"drift reference collected for {state.key}: {len(window.vectors)} "
            f"embeddings from {_iso(window.opened_at)} to {_iso(window.closed_at)}",
            raised_at=_datetime(window.closed_at),
            source=SOURCE,
            labels={"reference_digest": reference.digest},
        )
        return [Output(Topic.ALERTS, alert)]

    def _judge(self, tracker: _Tracker, window: Window) -> list[Output]:
        state = tracker.state
        results = [detector.predict(window.vectors) for detector in tracker.detectors]
        verdicts = [
            _verdict(detector, result)
            for detector, result in zip(tracker.detectors, results, strict=True)
        ]
        is_drift = combined(results, self._settings.combine)
        index = state.windows_closed
        state.windows_closed += 1
        described = self._describe(index, window)
        report = DriftReportEvent(
            event_id=self._event_id(state.key, "report", index),
            model=state.model,
            model_version=state.model_version,
            reference_digest=state.reference_digest or "",
            window=described,
            verdicts=verdicts,
            is_drift=is_drift,
        )
        outputs = [Output(Topic.DRIFT, report)]
        if not is_drift:
            return outputs
        outputs.append(Output(Topic.ALERTS, self._alert(report, results)))
        if tracker.cooldown.ready(window.closed_at):
            tracker.cooldown.mark(window.closed_at)
            state.last_retrain_at = window.closed_at
            request = RetrainRequestEvent(
                event_id=self._event_id(state.key, "retrain", index),
                model=state.model,
                model_version=state.model_version,
                requested_at=_datetime(window.closed_at),
                reference_digest=report.reference_digest,
                window=described,
                verdicts=verdicts,
                drift_report_id=report.event_id,
            )
            outputs.append(Output(Topic.RETRAIN, request))
        return outputs

    def _describe(self, index: int, window: Window) -> DriftWindow:
        count = self._settings.sample_ids
        step = max(1, len(window.image_ids) // count) if count else 0
        samples = list(window.image_ids[::step][:count]) if count else []
        return DriftWindow(
            index=index,
            opened_at=_datetime(window.opened_at),
            closed_at=_datetime(window.closed_at),
            size=len(window.vectors),
            closed_by="count" if window.closed_by == "count" else "age",
            sample_image_ids=samples,
        )

    def _alert(self, report: DriftReportEvent, results: list[DriftResult]) -> AlertEvent:
        worst = max(results, key=lambda result: result.statistic / result.threshold)
        severity: Literal["warning", "critical"] = (
            "critical" if worst.statistic >= 2 * worst.threshold else "warning"
        )
        detectors = ", ".join(v.detector for v in report.verdicts if v.is_drift)
        return AlertEvent(
            event_id=self._event_id(report.key, "alert", report.window.index),
            kind="drift",
            severity=severity,
            subject=report.key,
            summary=f"embedding drift on {report.key} in window {report.window.index} "
            f"({detectors}: statistic {worst.statistic:.3g} > threshold {worst.threshold:.3g})",
            raised_at=report.window.closed_at,
            source=SOURCE,
            labels={"model": report.model, "model_version": report.model_version},
            caused_by=report.event_id,
        )

    @staticmethod
    def _event_id(key: str, kind: str, index: int) -> str:
        return str(uuid.uuid5(_NAMESPACE, f"{key}/{kind}/{index}"))


def _verdict(detector: DriftDetector, result: DriftResult) -> DriftVerdict:
    return DriftVerdict(
        detector=detector.name,
        statistic=result.statistic,
        threshold=result.threshold,
        p_value=result.p_value,
        is_drift=result.is_drift,
        false_alarm_rate=detector.false_alarm_rate,
        per_component=list(result.per_component),
    )


def _datetime(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)


def _iso(timestamp: float) -> str:
    return _datetime(timestamp).isoformat(timespec="seconds")
