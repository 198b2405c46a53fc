"""Where jobs that outgrow one process run: a Ray cluster's address, and how a job uses it.

Torch-free and Ray-free, so the service's settings can carry it; Ray is imported when a job
first connects. Without a cluster (the default) every job trains in the retrain process.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class RayCluster:
    """A Ray cluster, the workers a fine-tune gets there, and where its checkpoints persist.

    ``address`` is what ``ray.init`` takes (``host:port`` of the head's GCS, ``ray://host:10001``
    through Ray Client, or ``auto``). ``storage`` is Ray's persistent storage, an absolute
    path every node sees (a shared volume) or a URI such as ``s3://bucket/prefix``: each
    epoch's checkpoint is written there, and a restarted worker group (``max_failures``
    times at most) or a redelivered job resumes from the last one.
    """

    address: str
    storage: str
    workers: int = 2
    use_gpu: bool = False
    max_failures: int = 2

    def __post_init__(self) -> None:
        """Refuse what Ray would refuse later, mid-job."""
        if self.workers < 1 or self.max_failures < -1:
            raise ValueError(f"workers must be >= 1 and max_failures >= -1, not {self}")

    def scoped(self, name: str) -> RayCluster:
        """The same cluster, its runs kept under ``storage/name`` (one retrain request's)."""
        return replace(self, storage=f"{self.storage.rstrip('/')}/{name}")

    def discard(self, name: str) -> None:
        """Delete ``storage/name``'s runs and checkpoints (a request registered or given up)."""
        from pyarrow import fs

        filesystem, root = fs.FileSystem.from_uri(self.scoped(name).storage)
        with contextlib.suppress(FileNotFoundError):
            filesystem.delete_dir(root)

    def connect(self) -> None:
        """Join the cluster as a driver, once per process."""
        import ray

        if not ray.is_initialized():
            ray.init(address=self.address, namespace="deeptrust", log_to_driver=True)
