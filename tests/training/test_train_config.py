"""TrainConfig: TOML loading with overrides, validation, the sweep grid and the digest.

No torch: these run in the main environment and in .venv-train alike.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from deeptrust.training.trainer.config import (
    SWEEPABLE,
    SearchConfig,
    TrainConfig,
    expand_sweep,
    load_config,
)

SHIPPED = Path(__file__).resolve().parents[2] / "training" / "configs" / "detector.toml"
SHIPPED_VIT = SHIPPED.with_name("detector-vit.toml")


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "train.toml"
    path.write_text(text)
    return path


def test_toml_round_trip_with_sweep_and_overrides(tmp_path):
    path = write(
        tmp_path,
        """
        [service]
        unrelated = "ignored"

        [train]
        seed = 7
        epochs = 12
        batch_size = 32
        accumulation_steps = 4
        learning_rate = 0.02
        precision = "bf16"
        device = "cpu"
        threshold = 0.4

        [train.sweep]
        weight_decay = [0.0, 0.01]
        epochs = [5, 10]
        """,
    )
    config = load_config(path, {"seed": 3, "learning_rate": 0.5})
    assert config.seed == 3  # override wins
    assert config.learning_rate == 0.5
    assert config.epochs == 12
    assert config.batch_size == 32
    assert config.accumulation_steps == 4
    assert config.weight_decay == 0.001  # default, not in the file
    assert config.precision == "bf16"
    assert config.device == "cpu"
    assert config.threshold == 0.4
    assert config.sweep == {"weight_decay": [0.0, 0.01], "epochs": [5.0, 10.0]}
    # An override of sweep replaces the whole table.
    assert load_config(path, {"sweep": {}}).sweep == {}


def test_shipped_config_trains_the_detect_default_on_a_grid_of_six_points():
    config = load_config(SHIPPED)
    assert config == TrainConfig(
        backbone="mobilenet-blocks",
        sweep={"learning_rate": [0.003, 0.01, 0.03], "weight_decay": [0.0001, 0.001]},
    )
    grid = expand_sweep(config)
    assert len(grid) == 6
    assert len({point.digest() for point in grid}) == 6


def test_shipped_vit_config_loads_and_sweeps_the_learning_rate():
    config = load_config(SHIPPED_VIT)
    assert config.backbone == "hf-vit"
    assert config.model == "google/vit-base-patch16-224"
    assert config.learning_rate == 5e-5
    assert config.batch_size % config.accumulation_steps == 0
    grid = expand_sweep(config)
    assert [point.learning_rate for point in grid] == [2e-5, 5e-5, 1e-4]
    assert all(point.model == config.model for point in grid)


def test_hf_vit_needs_a_model_and_the_probe_takes_none():
    with pytest.raises(ValueError, match="needs model"):
        TrainConfig(backbone="hf-vit")
    with pytest.raises(ValueError, match="needs model"):
        TrainConfig(backbone="hf-vit", model="  ")
    with pytest.raises(ValueError, match="apply to backbone hf-vit"):
        TrainConfig(model="google/vit-base-patch16-224")
    with pytest.raises(ValueError, match="apply to backbone hf-vit"):
        TrainConfig(freeze_epochs=1)
    with pytest.raises(ValueError, match="backbone"):
        TrainConfig.model_validate({"backbone": "resnet", "model": "x"})
    assert TrainConfig(backbone="hf-vit", model="/models/vit").model == "/models/vit"


def test_missing_train_table_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="no \\[train\\] table"):
        load_config(write(tmp_path, "[trian]\nepochs = 3\n"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[train]\nepoch = 3\n", "epoch"),
        ("[train]\n[train.sweep]\nseed = [1, 2]\n", "only learning_rate"),
        ("[train]\n[train.sweep]\nmomentum = [0.9]\n", "momentum"),
        ("[train]\nbatch_size = 30\naccumulation_steps = 4\n", "not a multiple"),
        ('[train]\nprecision = "fp8"\n', "precision"),
        ("[train]\nthreshold = 1.0\n", "threshold"),
        ("[train]\nlearning_rate = 0\n", "learning_rate"),
        ("[train]\nepochs = 0\n", "epochs"),
        ("[train]\n[train.sweep]\nepochs = [2.5]\n", "whole number"),
        ("[train]\n[train.sweep]\nlearning_rate = []\n", "no values"),
        ("[train]\n[train.sweep]\nlearning_rate = [0.1, 0.1]\n", "repeats"),
        ('[train]\n[train.search]\nscheduler = "hyperband"\n', "scheduler"),
        ("[train]\n[train.search]\nreduction_factor = 1\n", "reduction_factor"),
        ("[train]\n[train.search]\nsamples = -1\n", "samples"),
        ("[train]\n[train.search]\ntrials = 4\n", "trials"),
        ('[train]\nepochs = 2\n[train.search]\nscheduler = "asha"\ngrace_epochs = 3\n', "grace"),
    ],
)
def test_invalid_configs_are_rejected(tmp_path, text, message):
    with pytest.raises(ValueError, match=message):
        load_config(write(tmp_path, text))


def test_unknown_field_and_sweep_name_rejected_directly():
    with pytest.raises(ValueError, match="extra"):
        TrainConfig.model_validate({"lr": 0.1})
    with pytest.raises(ValueError, match="dropout"):
        TrainConfig(sweep={"dropout": [0.1]})


def test_accumulation_must_divide_batch_size_also_across_the_sweep():
    with pytest.raises(ValueError, match="not a multiple"):
        TrainConfig(batch_size=64, accumulation_steps=3)
    # Each point alone is fine, one combination is not: caught when the config is built.
    with pytest.raises(ValueError, match="sweep point"):
        TrainConfig(batch_size=64, sweep={"accumulation_steps": [1, 2, 3]})
    assert TrainConfig(batch_size=48, accumulation_steps=3).accumulation_steps == 3


def test_config_is_frozen():
    config = TrainConfig()
    with pytest.raises(ValueError, match="frozen"):
        config.epochs = 3


def test_grid_size_order_and_types():
    config = TrainConfig(
        batch_size=32,
        # Listed out of SWEEPABLE order on purpose: the grid nests in SWEEPABLE order.
        sweep={"accumulation_steps": [1, 2], "learning_rate": [0.1, 0.01, 0.001], "epochs": [3]},
    )
    grid = expand_sweep(config)
    assert len(grid) == 3 * 1 * 2
    assert [(p.learning_rate, p.epochs, p.accumulation_steps) for p in grid] == [
        (0.1, 3, 1),
        (0.1, 3, 2),
        (0.01, 3, 1),
        (0.01, 3, 2),
        (0.001, 3, 1),
        (0.001, 3, 2),
    ]
    for point in grid:
        assert point.sweep == {}
        assert type(point.epochs) is int
        assert type(point.accumulation_steps) is int
        assert point.batch_size == 32  # unswept fields carried over
    assert expand_sweep(config) == grid  # deterministic
    assert SWEEPABLE.index("learning_rate") < SWEEPABLE.index("accumulation_steps")


def test_empty_sweep_gives_the_config_itself():
    config = TrainConfig(epochs=3)
    assert expand_sweep(config) == [config]


def test_digest_is_stable_ignores_sweep_and_follows_every_field():
    base = TrainConfig()
    assert base.digest() == TrainConfig().digest()
    assert len(base.digest()) == 64
    assert base.digest() == TrainConfig(sweep={"learning_rate": [0.1]}).digest()
    assert base.digest() == TrainConfig(search=SearchConfig(scheduler="asha")).digest()
    # A value that equals the default but is written out gives the same run.
    assert base.digest() == TrainConfig(epochs=40, precision="auto").digest()
    changes = {
        "seed": 1,
        "epochs": 41,
        "batch_size": 32,
        "accumulation_steps": 2,
        "learning_rate": 0.02,
        "weight_decay": 0.0,
        "precision": "fp32",
        "device": "cpu",
        "threshold": 0.6,
    }
    # The fine-tune's fields only make sense together, so they change as a set.
    vit = {"backbone": "hf-vit", "model": "google/vit-base-patch16-224"}
    lora = {**vit, "adapter": "lora"}
    later = [
        vit,
        {**vit, "model": "/models/vit"},
        {**vit, "freeze_epochs": 1},
        lora,
        {**lora, "lora_rank": 4},
        {**lora, "lora_alpha": 8.0},
        {**lora, "lora_dropout": 0.1},
        {**lora, "lora_targets": ["q_proj"]},
    ]
    later_fields = {name for fields in later for name in fields}
    assert set(changes) | later_fields == set(TrainConfig.model_fields) - {"sweep", "search"}
    digests = {TrainConfig(**{name: value}).digest() for name, value in changes.items()}
    digests |= {TrainConfig(**fields).digest() for fields in later}
    assert len(digests) == len(changes) + len(later)
    assert base.digest() not in digests


def test_the_search_reads_from_toml_and_grid_points_carry_none(tmp_path):
    text = (
        "[train]\nepochs = 4\n[train.sweep]\nlearning_rate = [0.01, 0.1]\n"
        '[train.search]\nscheduler = "asha"\nsamples = 1\ngrace_epochs = 2\n'
    )
    config = load_config(write(tmp_path, text))
    assert config.search == SearchConfig(scheduler="asha", samples=1, grace_epochs=2)
    assert all(point.search == SearchConfig() for point in expand_sweep(config))
    assert [point.learning_rate for point in expand_sweep(config)] == [0.01, 0.1]


def test_digest_of_a_grid_point_matches_the_same_config_written_out():
    point = expand_sweep(TrainConfig(sweep={"epochs": [7], "learning_rate": [0.5]}))[0]
    assert point.digest() == TrainConfig(epochs=7, learning_rate=0.5).digest()


def test_digest_is_pinned_so_checkpoints_on_disk_stay_resumable():
    # Checkpoints store this digest; if it changed with a pydantic or json upgrade, every
    # half-finished run would refuse to resume. Change it only with the digest's version.
    assert TrainConfig().digest() == (
        "54987494d9c9ac4ca22b9cc71ec2485fac3e7e5c759b197eedd5bd2f81347ce4"
    )


def test_lora_is_for_the_vit_keeps_its_backbone_frozen_and_counts_in_the_digest():
    vit = TrainConfig(backbone="hf-vit", model="some/vit")
    lora = TrainConfig(backbone="hf-vit", model="some/vit", adapter="lora")
    assert lora.lora_targets == ["q_proj", "v_proj"]
    assert lora.digest() != vit.digest()
    assert TrainConfig(backbone="hf-vit", model="some/vit", adapter="none").digest() == vit.digest()
    with pytest.raises(ValueError, match="adapter lora applies to backbone hf-vit"):
        TrainConfig(adapter="lora")
    with pytest.raises(ValueError, match="LoRA keeps the backbone frozen"):
        TrainConfig(backbone="hf-vit", model="some/vit", adapter="lora", freeze_epochs=1)
