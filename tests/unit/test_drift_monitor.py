"""The drift monitor's logic without a broker: reference, reports, alerts, one request."""

from datetime import UTC, datetime

import numpy as np
import pytest

from deeptrust.drift.monitor import DriftMonitor, Embedded
from deeptrust.drift.reference import ReferenceStore
from deeptrust.drift.settings import DriftSettings
from deeptrust.schemas.events import (
    AlertEvent,
    DriftReportEvent,
    EmbeddingEvent,
    RetrainRequestEvent,
)
from deeptrust.streams.errors import InvalidInput, Reason
from deeptrust.streams.topics import Topic

DIM, RANK = 32, 4
MIXING = np.random.default_rng(42).normal(size=(RANK, DIM))


def vectors(rng, n, shift=0.0):
    return rng.normal(loc=shift, size=(n, RANK)) @ MIXING + 0.3 * rng.normal(size=(n, DIM))


class Stream:
    """Feeds embeddings to a monitor as if read from one partition, one a second."""

    def __init__(self, monitor, model="m", version="1"):
        self.monitor, self.model, self.version = monitor, model, version
        self.offset, self.at = 0, 1_700_000_000.0

    def feed(self, rows):
        outputs = []
        for row in rows:
            event = EmbeddingEvent(
                event_id=f"e{self.offset}",
                image_id=f"img-{self.offset}",
                uploaded_at=datetime.fromtimestamp(self.at, UTC),
                model=self.model,
                model_version=self.version,
                vector=[float(x) for x in row],
            )
            outputs += self.monitor.add(Embedded(event, self.at, 0, self.offset))
            self.offset += 1
            self.at += 1.0
        return outputs


def settings(tmp_path, **overrides):
    values = dict(
        window_size=200,
        reference_size=1000,
        min_count=50,
        false_alarm_rate=0.01,
        cooldown_s=3600,
        reference_dir=tmp_path / "references",
    )
    return DriftSettings(**(values | overrides))


def of(outputs, topic):
    return [output.event for output in outputs if output.topic == topic]


def test_first_window_of_a_model_version_becomes_its_reference(tmp_path):
    monitor = DriftMonitor(settings(tmp_path), ReferenceStore(tmp_path / "references"))
    stream = Stream(monitor)
    rng = np.random.default_rng(0)
    assert stream.feed(vectors(rng, 999)) == []
    (alert,) = of(stream.feed(vectors(rng, 1)), Topic.ALERTS)
    assert isinstance(alert, AlertEvent)
    assert (alert.kind, alert.severity, alert.subject) == ("drift-reference", "info", "m@1")
    stored = ReferenceStore(tmp_path / "references").load("m", "1")
    assert stored is not None
    assert stored.vectors.shape == (1000, DIM)
    assert alert.labels["reference_digest"] == stored.digest


def test_stable_stream_reports_every_window_and_asks_for_nothing(tmp_path):
    monitor = DriftMonitor(settings(tmp_path), ReferenceStore(tmp_path / "references"))
    stream = Stream(monitor)
    rng = np.random.default_rng(1)
    stream.feed(vectors(rng, 1000))
    outputs = stream.feed(vectors(rng, 2000))
    reports = of(outputs, Topic.DRIFT)
    assert [r.window.index for r in reports] == list(range(10))
    assert all(isinstance(r, DriftReportEvent) and r.window.size == 200 for r in reports)
    false_alarms = sum(r.is_drift for r in reports)
    assert false_alarms <= 1, "false alarms stay near 1 in 100"
    assert len(of(outputs, Topic.RETRAIN)) == false_alarms


def test_a_shift_yields_alerts_but_exactly_one_retrain_request_with_evidence(tmp_path):
    monitor = DriftMonitor(settings(tmp_path), ReferenceStore(tmp_path / "references"))
    stream = Stream(monitor)
    rng = np.random.default_rng(2)
    stream.feed(vectors(rng, 1000))
    outputs = stream.feed(vectors(rng, 1000, shift=0.5))
    reports = of(outputs, Topic.DRIFT)
    assert len(reports) == 5
    assert all(r.is_drift for r in reports)
    assert len(of(outputs, Topic.ALERTS)) == 5, "every drifted window raises an alert"
    (request,) = of(outputs, Topic.RETRAIN)
    assert isinstance(request, RetrainRequestEvent)
    first = reports[0]
    assert request.drift_report_id == first.event_id
    assert request.window == first.window
    assert len(request.window.sample_image_ids) == 20
    (verdict,) = request.verdicts
    assert verdict.detector == "kl-histogram"
    assert verdict.statistic > verdict.threshold
    assert request.reference_digest == first.reference_digest != ""


def test_cooldown_is_measured_in_event_time(tmp_path):
    monitor = DriftMonitor(
        settings(tmp_path, cooldown_s=300), ReferenceStore(tmp_path / "references")
    )
    stream = Stream(monitor)
    rng = np.random.default_rng(3)
    stream.feed(vectors(rng, 1000))
    outputs = stream.feed(vectors(rng, 1000, shift=0.5))  # 1000 s of event time
    requests = of(outputs, Topic.RETRAIN)
    assert [r.window.index for r in requests] == [0, 2, 4], "one request per 300 s at most"


def test_replay_after_restart_skips_what_was_judged(tmp_path):
    first = DriftMonitor(settings(tmp_path), ReferenceStore(tmp_path / "references"))
    stream = Stream(first)
    rng = np.random.default_rng(4)
    data = vectors(rng, 1300)
    stream.feed(data[:1250])
    assert first.pending_offsets() == {0: 1200}, "window 0 closed at 1199; 1200.. are open"
    (state,) = first.take_changed()
    assert state.closed_through == {0: 1199}
    assert state.windows_closed == 1

    second = DriftMonitor(settings(tmp_path), ReferenceStore(tmp_path / "references"))
    second.restore([state])
    replay = Stream(second)
    outputs = replay.feed(data[:1300])
    assert of(outputs, Topic.ALERTS) == [], "the reference is not collected again"
    assert of(outputs, Topic.DRIFT) == [], "1200..1299 is only half a window"
    assert second.pending_offsets() == {0: 1200}
    outputs = replay.feed(vectors(rng, 100))
    (report,) = of(outputs, Topic.DRIFT)
    assert report.window.index == 1


def test_embeddings_that_do_not_fit_the_reference_are_invalid_input(tmp_path):
    monitor = DriftMonitor(settings(tmp_path), ReferenceStore(tmp_path / "references"))
    stream = Stream(monitor)
    stream.feed(vectors(np.random.default_rng(5), 1000))
    with pytest.raises(InvalidInput) as caught:
        stream.feed(np.zeros((1, DIM + 1)))
    assert caught.value.reason is Reason.INCOMPATIBLE_EMBEDDING


def test_a_new_model_version_starts_its_own_reference(tmp_path):
    monitor = DriftMonitor(settings(tmp_path), ReferenceStore(tmp_path / "references"))
    rng = np.random.default_rng(6)
    Stream(monitor, version="1").feed(vectors(rng, 1000))
    newer = Stream(monitor, version="2")
    newer.offset = 5000
    outputs = newer.feed(vectors(rng, 1000, shift=2.0))
    assert of(outputs, Topic.DRIFT) == [], "version 2 is not judged against version 1"
    (alert,) = of(outputs, Topic.ALERTS)
    assert alert.subject == "m@2"


def test_event_ids_are_the_same_on_replay(tmp_path):
    runs = []
    for attempt in ("a", "b"):
        monitor = DriftMonitor(settings(tmp_path / attempt), ReferenceStore(tmp_path / attempt))
        stream = Stream(monitor)
        rng = np.random.default_rng(7)
        runs.append([o.event.event_id for o in stream.feed(vectors(rng, 1400))])
    assert runs[0] == runs[1]
    assert len(runs[0]) == 3, "one reference alert and two reports"
