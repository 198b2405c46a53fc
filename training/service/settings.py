"""Settings of the training service (``DEEPTRUST_TRAINING_*``), read once at start-up."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from deeptrust.training.service.seed_dataset import SAMPLES
from deeptrust.training.trainer.cluster import RayCluster
from deeptrust.training.trainer.loading import LoaderOptions, StartMethod

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


class TrainingSettings(BaseSettings):
    """Where runs are tracked, what data a job reads, and where its work lives."""

    model_config = SettingsConfigDict(env_prefix="DEEPTRUST_TRAINING_")

    tracking_uri: str = "http://127.0.0.1:5000"
    """The MLflow tracking server (``deeptrust-dev mlflow up`` starts a local one there)."""
    experiment: str = "deeptrust-detector"
    registered_model: str = "deeptrust-detector"
    config: Path = CONFIG_DIR / "detector.toml"
    """Hyperparameters and the sweep (``training/configs/detector.toml``)."""
    datasets: list[Path] = Field(default_factory=list)
    """Folders in the Kaggle AI-vs-human layout; empty means the offline seed dataset."""
    seed_dataset_dir: Path = Path(".deeptrust/datasets/seed")
    samples_dir: Path = SAMPLES
    """The sample photographs and generated images the seed dataset is cut from."""
    seed_real_count: int = Field(default=300, ge=1)
    seed_mate_backgrounds_dir: Path | None = None
    """Debian's mate-backgrounds, unpacked (``deeptrust-dev debian mate-backgrounds``): its
    photographs join the seed dataset's real side."""
    include_feedback: bool = True
    work_dir: Path = Path(".deeptrust/training")
    """Feature cache, checkpoints (a retried job resumes from them) and evaluation plots."""
    artifact_prefix: str = "models"
    """Object-store key prefix of registered artefacts, which stages download."""
    threads: int = Field(default=2, ge=1)
    loader_workers: int = Field(default=2, ge=0)
    """Worker processes that read, decode and transform examples from the object store
    (per loader; 0 reads in the training process)."""
    loader_start_method: StartMethod = "forkserver"
    """How those workers start: ``forkserver`` by default, since the retrain consumer trains in
    a thread beside its Kafka clients' threads, which a ``fork`` would copy mid-lock."""

    caption_datasets: list[Path] = Field(default_factory=list)
    """Flickr30k-layout folders (``results.csv`` beside the images) the captioner retrains on."""
    caption_config: Path = CONFIG_DIR / "captioner.toml"
    """The captioner's fine-tune settings (``training/configs/captioner.toml``)."""
    caption_experiment: str = "deeptrust-captioner"
    caption_registered_model: str = "deeptrust-captioner"

    ray_address: str | None = None
    """A Ray cluster that runs the ViT fine-tunes (``host:port``, ``ray://host:10001`` or
    ``auto``; ``deeptrust-dev ray up`` starts a local one); none (the default) trains in
    this process."""
    ray_workers: int = Field(default=2, ge=1)
    """Ray Train workers per fine-tune, data-parallel (one process each)."""
    ray_use_gpu: bool = False
    """One GPU per Ray Train worker (NCCL) instead of CPUs (gloo)."""
    ray_storage: str | None = None
    """Where Ray persists each epoch's checkpoint: a path every node sees, or a URI such as
    ``s3://bucket/prefix``; by default ``<work dir>/ray``, enough for a one-machine cluster."""
    ray_max_failures: int = Field(default=2, ge=-1)
    """Worker-group restarts a fine-tune survives (-1: no limit)."""

    def ray_cluster(self) -> RayCluster | None:
        """The Ray cluster jobs run on, if one is configured."""
        if self.ray_address is None:
            return None
        storage = self.ray_storage or str((self.work_dir / "ray").resolve())
        return RayCluster(
            self.ray_address, storage, self.ray_workers, self.ray_use_gpu, self.ray_max_failures
        )

    def loader_options(self) -> LoaderOptions:
        """How a job's loaders read examples."""
        return LoaderOptions(self.loader_workers, self.loader_start_method)
