"""The detect stage with the CLIP embedder writes 512-d ViT embeddings named after the tower."""

import numpy as np
import pytest

from deeptrust.schemas.events import EmbeddingEvent
from deeptrust.streams.reader import read_until
from deeptrust.streams.topics import Topic
from tests.images import sample_paths, small_photo

pytestmark = pytest.mark.integration


def test_detect_with_the_clip_embedder_writes_512_d_embeddings(kafka, topics, uploads, start_stage):
    start_stage("detect", DEEPTRUST_EMBED_BACKEND="clip-vit-b16-int8")
    paths = sample_paths()[:3]
    sent = [uploads.upload(small_photo(path), path.name, image_id=path.stem) for path in paths]
    uploads.flush()
    wanted = {upload.image_id for upload in sent}
    embeddings = read_until(
        kafka,
        topics(Topic.EMBEDDINGS),
        EmbeddingEvent,
        lambda r: wanted <= {i.event.image_id for i in r},
        120,
    )
    assert {e.event.image_id for e in embeddings} == wanted
    for item in embeddings:
        assert item.event.model == "clip-vit-b16-int8"
        assert len(item.event.values()) == 512
        assert np.linalg.norm(item.event.values()) == pytest.approx(1.0, abs=1e-5)
