"""DDP outside Ray: torchrun with two gloo processes trains the ViT as one process would.

Runs in .venv-train only (torch, transformers, torchrun), on the tiny random ViT of
tests/torch/tiny.py and 24 images of the seed dataset. Two processes, each backward-ing its
share of one effective batch of 9 rows (5 and 4), average to the gradient one process
computes on the whole batch: within 1e-6 absolute (float32 sums in another order). Then
the torchrun fine-tune writes a model the hf-vit detect backend serves.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from deeptrust.processors.transformers_backends.common import TRAINING_RECORD  # noqa: E402
from deeptrust.training.datasets.kaggle_ai_vs_human import INDEX_FILE  # noqa: E402
from deeptrust.training.service.seed_dataset import build_seed_dataset  # noqa: E402
from tests.torch.tiny import tiny_vit  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TORCHRUN = Path(sys.executable).with_name("torchrun")
PER_CLASS = 12


def run(command: list[str]) -> str:
    """Run from the repository root with it on the path; the output, or a failure with it."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240, check=False
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done.stdout


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    seed = build_seed_dataset(tmp_path_factory.mktemp("seed"), real_count=PER_CLASS)
    header, *rows = (seed / INDEX_FILE).read_text(encoding="utf-8").splitlines()
    chosen = [r for r in rows if r.split(",")[1] == "0"][:PER_CLASS]
    chosen += [r for r in rows if r.split(",")[1] == "1"][:PER_CLASS]
    (seed / INDEX_FILE).write_text("\n".join([header, *chosen]) + "\n", encoding="utf-8")
    return seed


def test_two_gloo_processes_give_the_single_process_gradient(dataset, tmp_path):
    model = tiny_vit(tmp_path / "vit")
    script = ["-m", "tests.training.ddp_gradients", str(dataset), str(model)]
    run([sys.executable, *script, str(tmp_path / "one.pt")])
    run([str(TORCHRUN), "--standalone", "--nproc-per-node", "2", *script, str(tmp_path / "two.pt")])
    one = torch.load(tmp_path / "one.pt", weights_only=True)
    two = torch.load(tmp_path / "two.pt", weights_only=True)
    assert (one["world"], two["world"]) == (1, 2)
    assert one["grads"].keys() == two["grads"].keys()
    assert sum(float(g.norm()) for g in one["grads"].values()) > 0.1
    # The loss (about 20) is a float32 sum taken in another order across two processes: equal
    # up to a few units in its last place, which at 20 is 1.9e-6 on its own.
    ulps = 4 * torch.finfo(torch.float32).eps
    torch.testing.assert_close(two["loss"], one["loss"], atol=0, rtol=ulps)
    for name, grad in one["grads"].items():
        torch.testing.assert_close(two["grads"][name], grad, atol=1e-6, rtol=0, msg=name)


def test_torchrun_fine_tunes_into_a_model_the_hf_vit_backend_serves(dataset, tmp_path):
    import deeptrust.processors.transformers_backends  # noqa: F401 - registers hf-vit
    from deeptrust.processors.models import ModelSpec, load_model
    from deeptrust.streams.images import decode_image

    model = tiny_vit(tmp_path / "vit")
    config = tmp_path / "vit.toml"
    config.write_text(
        f'[train]\nbackbone = "hf-vit"\nmodel = "{model}"\nepochs = 2\nbatch_size = 8\n'
        'learning_rate = 1e-3\ndevice = "cpu"\n',
        encoding="utf-8",
    )
    out = tmp_path / "out"
    printed = run(
        [
            str(TORCHRUN),
            "--standalone",
            "--nproc-per-node",
            "2",
            "-m",
            "deeptrust.training.service.distributed_finetune",
            "--dataset",
            str(dataset),
            "--config",
            str(config),
            "--output",
            str(out),
            "--workers",
            "1",
        ]
    )
    lines = [json.loads(line) for line in printed.splitlines() if line.startswith("{")]
    assert len(lines) == 2  # each process reports the same result
    assert {line["output"] for line in lines} == {str(out)}
    record = json.loads((out / TRAINING_RECORD).read_text(encoding="utf-8"))
    assert record["processes"] == 2
    detector = load_model(ModelSpec("detect", "hf-vit", "hf-vit", options={"path": str(out)}))
    image = decode_image((dataset / "real" / "0000.png").read_bytes()).image
    (verdict,) = detector.predict([image])
    assert 0.0 <= verdict.ai_probability <= 1.0
