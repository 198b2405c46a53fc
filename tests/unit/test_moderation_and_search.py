from datetime import UTC, datetime

from deeptrust.processors.moderation import in_sample, route
from deeptrust.processors.search_index import SearchIndex
from deeptrust.schemas.events import Caption, Detection, EnrichedEvent, Tags


def enriched(image_id, probability=0.1, caption="a photo", tags=(), signals=(), label=None):
    return EnrichedEvent(
        event_id=f"e-{image_id}",
        image_id=image_id,
        uri=f"file:///{image_id}.jpg",
        uploaded_at=datetime(2026, 1, 1, tzinfo=UTC),
        width=10,
        height=10,
        detection=Detection(
            ai_probability=probability,
            label=label or ("ai_generated" if probability >= 0.5 else "real"),
            model="m",
            model_version="1",
            signals=list(signals),
        ),
        caption=Caption(text=caption, model="c"),
        tags=Tags(values=list(tags), model="t"),
    )


def test_flagged_images_always_go_to_review():
    assert route(enriched("a", probability=0.9), threshold=0.5, sample_rate=0.0) == "flagged"


def test_provenance_evidence_flags_an_image_the_pixel_score_passes():
    traced = enriched("c2pa", probability=0.1, signals=["c2pa-manifest"])
    assert route(traced, threshold=0.5, sample_rate=0.0) == "flagged"
    assert route(enriched("clean", probability=0.1), threshold=0.5, sample_rate=0.0) is None


def test_an_inconclusive_verdict_goes_to_review_below_the_threshold():
    weak = enriched("weak", probability=0.3, label="inconclusive")
    assert route(weak, threshold=0.5, sample_rate=0.0) == "flagged"
    assert route(enriched("real", probability=0.3), threshold=0.5, sample_rate=0.0) is None


def test_sample_is_deterministic_and_near_its_rate():
    ids = [f"image-{i}" for i in range(20_000)]
    sampled = [i for i in ids if in_sample(i, 0.1)]
    assert 0.09 < len(sampled) / len(ids) < 0.11
    assert sampled == [i for i in ids if in_sample(i, 0.1)]
    assert route(enriched(sampled[0]), 0.5, 0.1) == "sampled"
    assert route(enriched(next(i for i in ids if not in_sample(i, 0.1))), 0.5, 0.1) is None


def test_search_ranks_matches_and_upserts_by_image_id(tmp_path):
    index = SearchIndex(tmp_path / "search.db")
    index.upsert(
        [
            enriched("dog", caption="a dog running on a beach", tags=["dog", "beach"]),
            enriched("cat", caption="a cat asleep on a sofa", tags=["cat"]),
        ]
    )
    index.upsert([enriched("dog", caption="a dog running on a sandy beach", tags=["dog", "beach"])])
    hits = index.search("dog on a beach")
    assert next(hit.image_id for hit in hits) == "dog"
    assert hits[0].caption == "a dog running on a sandy beach"
    assert index.count() == 2
    assert index.search("!!!") == []
    index.close()
