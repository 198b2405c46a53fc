"""The offline seed dataset: real photo crops against the project's generated images.

No labelled AI-vs-real dataset installs offline, so the training service starts from what
the project has honestly: crops of the sample photographs (label 0) and the shipped draws
of its own two small generators (``samples/generated``, label 1), written in the Kaggle
"AI vs. Human-Generated Images" layout so the same loader reads it as a real download (with
the layout's optional ``generator`` column, so a retrain reports each generator).
Real crops are brought to the generators' 64x64, as the shipped probe's were, so resolution
alone cannot tell the classes apart.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from deeptrust.training.datasets.kaggle_ai_vs_human import INDEX_FILE
from deeptrust.training.detector import data

SAMPLES = data.ROOT / "samples"
"""The repository's samples: ``images/`` (real photographs) and ``generated/`` (the draws of
the project's generators). Installed elsewhere (an image), ``DEEPTRUST_TRAINING_SAMPLES_DIR``
says where a copy lives."""
GENERATED = SAMPLES / "generated"
CROP_SIDE = 64
DONE_FILE = ".complete"


def _recipe(real_count: int, seed: int, generated: Path, debian: bool) -> str:
    """What a built folder was made from; a different recipe rebuilds it."""
    index = (generated / INDEX_FILE).read_bytes()
    return json.dumps(
        {
            "real_count": real_count,
            "seed": seed,
            "debian_photos": debian,
            "side": CROP_SIDE,
            "generated_index_sha256": hashlib.sha256(index).hexdigest(),
            "columns": "file_name,label,generator",
        },
        sort_keys=True,
    )


def build_seed_dataset(
    folder: Path,
    real_count: int = 300,
    seed: int = 0,
    samples: Path = SAMPLES,
    mate_backgrounds: Path | None = None,
) -> Path:
    """Write (or reuse) the seed dataset in ``folder``; return the folder.

    Building is deterministic for a given recipe, so the manifest, and with it the dataset
    version logged to the tracking server, is the same on every machine. ``mate_backgrounds``
    (Debian's package, unpacked: ``deeptrust-dev debian mate-backgrounds``) adds its 12
    nature photographs to the 8 samples, for more varied real crops.
    """
    generated = samples / "generated"
    recipe = _recipe(real_count, seed, generated, mate_backgrounds is not None)
    done = folder / DONE_FILE
    if done.exists() and done.read_text(encoding="utf-8") == recipe:
        return folder
    if folder.exists():
        shutil.rmtree(folder)
    (folder / "real").mkdir(parents=True)
    rows = ["file_name,label,generator"]
    rng = np.random.default_rng(seed)
    photos = data.sample_photos(samples / "images")
    photos += [] if mate_backgrounds is None else data.debian_photos(mate_backgrounds)
    crops = data.random_crops(photos, real_count, rng, CROP_SIDE)
    for index, crop in enumerate(crops):
        relative = f"real/{index:04d}.png"
        crop.image.save(folder / relative, "PNG")
        rows.append(f"{relative},0,")
    for line in (generated / INDEX_FILE).read_text(encoding="utf-8").splitlines()[1:]:
        relative, label = line.rsplit(",", 1)
        target = folder / "generated" / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(generated / relative) as image:
            image.save(target, "PNG")
        generator = relative.split("/", 1)[0]  # samples/generated/<generator>/<file>
        rows.append(f"generated/{relative},{label},{generator}")
    (folder / INDEX_FILE).write_text("\n".join(rows) + "\n", encoding="utf-8")
    done.write_text(recipe, encoding="utf-8")
    return folder
