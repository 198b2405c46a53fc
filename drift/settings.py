"""How the drift processor windows, tests and asks for retraining (``DEEPTRUST_DRIFT_*``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from deeptrust.drift.detectors import Combine, DetectorConfig


class DriftSettings(BaseSettings):
    """Read once at start-up; the defaults suit 300 embeddings a second."""

    model_config = SettingsConfigDict(env_prefix="DEEPTRUST_DRIFT_")

    window_size: int = Field(default=500, ge=20, description="Embeddings per judged window.")
    reference_size: int = Field(
        default=1000, ge=40, description="Embeddings of a new model version kept as reference."
    )
    max_age_s: float = Field(default=3600.0, gt=0, description="Close a window this old.")
    min_count: int = Field(default=100, ge=20, description="Fewest embeddings worth judging.")
    detectors: list[str] = Field(default_factory=lambda: ["kl-histogram"])
    combine: Combine = "any"
    false_alarm_rate: float = Field(default=0.01, gt=0, lt=1)
    n_components: int = Field(default=8, ge=1)
    cooldown_s: float = Field(default=6 * 3600.0, ge=0, description="Between retrain requests.")
    sample_ids: int = Field(default=20, ge=0, description="Image ids quoted as evidence.")
    reference_dir: Path = Path(".deeptrust/drift/references")
    commit_interval_s: float = Field(default=5.0, gt=0)
    publish_interval_s: float = Field(
        default=1.0,
        ge=0,
        description="Least time between transactions that publish closed windows' reports.",
    )
    """Windows closing faster than this (a backlog read after an outage: thousands of
    embeddings a second) share one transaction instead of paying one each; at the average
    upload rate a window of 500 closes every 1.7 s, so reports are not held back."""
    seed: int = 0

    @model_validator(mode="after")
    def _sizes_fit(self) -> DriftSettings:
        if self.min_count > self.window_size:
            raise ValueError("min_count must not exceed window_size")
        return self

    def detector_config(self) -> DetectorConfig:
        """What the detectors are fitted with."""
        return DetectorConfig(
            window_size=self.window_size,
            false_alarm_rate=self.false_alarm_rate,
            n_components=self.n_components,
            seed=self.seed,
        )
