"""The detect stage's two MobileNetV2 models share one compiled network and one pass a batch."""

from PIL import Image

from deeptrust.processors.backbones.batch_memo import LastBatchMemo
from deeptrust.processors.backbones.mobilenet_v2 import MobileNetV2
from deeptrust.processors.detect import DetectStage
from deeptrust.processors.models import ModelSpec
from deeptrust.streams.objectstore import LocalObjectStore
from tests.events import upload_event
from tests.images import sample_paths, small_photo


def test_memo_returns_the_same_result_only_for_the_same_objects():
    memo: LastBatchMemo[list[int]] = LastBatchMemo()
    calls: list[int] = []

    def compute() -> list[int]:
        calls.append(1)
        return [len(calls)]

    images = [Image.new("RGB", (4, 4)), Image.new("RGB", (4, 4))]
    first = memo.lookup_or_compute(images, compute)
    assert memo.lookup_or_compute(list(images), compute) is first
    equal_copies = [image.copy() for image in images]
    assert memo.lookup_or_compute(equal_copies, compute) == [2]
    assert memo.lookup_or_compute(images[:1], compute) == [3]
    assert (memo.hits, memo.misses, len(calls)) == (1, 3, 3)


def test_memo_never_keeps_a_batch_alive():
    memo: LastBatchMemo[int] = LastBatchMemo()
    memo.lookup_or_compute([Image.new("RGB", (4, 4))], lambda: 1)
    assert all(ref() is None for ref in memo._refs)
    assert memo.lookup_or_compute([Image.new("RGB", (4, 4))], lambda: 2) == 2


def test_items_that_cannot_be_weakly_referenced_are_always_computed():
    memo: LastBatchMemo[int] = LastBatchMemo()
    texts = ["a", "b"]
    assert memo.lookup_or_compute(texts, lambda: 1) == 1
    assert memo.lookup_or_compute(texts, lambda: 2) == 2


def embed_spec(**options: str) -> ModelSpec:
    return ModelSpec(
        "embed", "mobilenet-v2", "mobilenet-v2", options={"intra_op_threads": "1", **options}
    )


def test_models_with_the_same_settings_share_one_compiled_network():
    first, second = MobileNetV2(embed_spec()), MobileNetV2(embed_spec(max_batch="4"))
    first.load()
    second.load()
    assert first.compiled is second.compiled
    int8 = MobileNetV2(embed_spec(precision="int8"))
    int8.load()
    assert int8.compiled is not first.compiled


def test_detect_stage_runs_the_network_once_per_batch(tmp_path):
    settings = {"intra_op_threads": "1"}
    store = LocalObjectStore.at(tmp_path)
    stage = DetectStage(
        store,
        ModelSpec("detect", "mobilenet-probe", "mobilenet-probe", options=settings),
        embed_spec(),
        max_pixels=50_000_000,
    )
    stage.setup()
    assert stage._embedder is not None
    memo = stage._embedder.compiled.memo
    stored = [store.put(f"{i}.jpg", small_photo(path)) for i, path in enumerate(sample_paths()[:3])]
    uploads = [
        stage.prepare(upload_event(image_id=f"img-{i}", uri=obj.uri))
        for i, obj in enumerate(stored)
    ]
    before = (memo.hits, memo.misses)
    results = stage.process(uploads)
    assert len(results) == 3
    assert (memo.hits - before[0], memo.misses - before[1]) == (1, 1)
