from datetime import UTC, datetime, timedelta

from PIL import Image

from deeptrust.drift.report import write_report
from deeptrust.schemas.events import DriftReportEvent, DriftVerdict, DriftWindow


def report(index, statistic, model_version="1"):
    start = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=10 * index)
    verdicts = [
        DriftVerdict(
            detector=name,
            statistic=statistic * scale,
            threshold=1.0 * scale,
            p_value=0.5 if statistic < 1 else 0.001,
            is_drift=statistic > 1,
            false_alarm_rate=0.01,
            per_component=[statistic * scale / 4] * 4,
        )
        for name, scale in (("kl-histogram", 1.0), ("alibi-ks", 2.0))
    ]
    return DriftReportEvent(
        event_id=f"r{index}",
        model="mobilenet-v2",
        model_version=model_version,
        reference_digest="abc",
        window=DriftWindow(
            index=index,
            opened_at=start,
            closed_at=start + timedelta(minutes=9),
            size=500,
            closed_by="count",
        ),
        verdicts=verdicts,
        is_drift=statistic > 1,
    )


def test_writes_a_timeline_and_a_worst_window_per_model_version(tmp_path):
    reports = [report(i, 0.5 + (i >= 6) * 2.0) for i in range(10)] + [report(0, 0.4, "2")]
    paths = write_report(reports, tmp_path)
    assert [p.name for p in paths] == [
        "mobilenet-v2_1-timeline.png",
        "mobilenet-v2_1-worst-window.png",
        "mobilenet-v2_2-timeline.png",
        "mobilenet-v2_2-worst-window.png",
    ]
    for path in paths:
        with Image.open(path) as image:
            assert image.format == "PNG"
            assert image.width > 500
            assert image.height > 300
