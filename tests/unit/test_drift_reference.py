import numpy as np

from deeptrust.drift.reference import Reference, ReferenceStore


def reference(version="1", seed=0):
    vectors = np.random.default_rng(seed).normal(size=(20, 8))
    return Reference("colour-texture", version, vectors, tuple(f"img-{i}" for i in range(20)))


def test_saved_reference_loads_back_identically(tmp_path):
    store = ReferenceStore(tmp_path)
    saved = reference()
    store.save(saved)
    loaded = store.load("colour-texture", "1")
    assert loaded is not None
    assert np.array_equal(loaded.vectors, saved.vectors)
    assert loaded.image_ids == saved.image_ids
    assert loaded.digest == saved.digest


def test_each_model_version_has_its_own_reference(tmp_path):
    store = ReferenceStore(tmp_path)
    store.save(reference("1", seed=0))
    assert store.load("colour-texture", "2") is None, "a new version starts without a reference"
    store.save(reference("2", seed=1))
    first, second = store.load("colour-texture", "1"), store.load("colour-texture", "2")
    assert first is not None
    assert second is not None
    assert first.digest != second.digest


def test_model_names_cannot_escape_the_directory(tmp_path):
    store = ReferenceStore(tmp_path / "refs")
    path = store.save(Reference("../../etc/x", "1/../2", np.zeros((2, 2)), ("a", "b")))
    assert path.parent == tmp_path / "refs"
