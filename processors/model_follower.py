"""Follow the model changelog so a running stage serves a promoted version without a restart.

The training service announces promotions on the compacted ``models.v1`` topic (one
:class:`~deeptrust.schemas.events.ModelUpdateEvent` per ``model:alias`` key). A stage that follows a
registered model reads that topic with a consumer of its own: from the beginning at
start-up, so a restarted stage serves the current production version instead of the
shipped default, then from a daemon thread. The follower fetches the artefact from the
object store, checks its SHA-256, caches it and loads the model, all off the processing
thread; the stage only swaps the ready model in between batches (:meth:`take_pending`).

The consumer commits nothing and joins no group: every instance of a stage must see every
update, and the topic is small and compacted, so reading it from the start is cheap.
Log order is the truth: all production events of one model share a key, hence a
partition, so the last one read is the latest promotion (or a rollback).
"""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
import tarfile
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlparse

from confluent_kafka import Consumer, KafkaException, Message
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from deeptrust.processors.artefact_archive import unpack_archive
from deeptrust.processors.models import BatchModel, ModelSpec, load_model
from deeptrust.schemas.events import ModelUpdateEvent
from deeptrust.streams.atomic_file import write_atomically
from deeptrust.streams.codec import decode
from deeptrust.streams.config import KafkaSettings
from deeptrust.streams.errors import InvalidInput, Reason
from deeptrust.streams.objectstore import ObjectStore
from deeptrust.streams.retry import RetryPolicy
from deeptrust.streams.tail import BEGINNING, ConsumerFactory, TopicTail
from deeptrust.streams.topics import Topic, TopicNames

log = logging.getLogger(__name__)

PRODUCTION = "production"
ARTEFACT_OPTIONS: dict[str, str] = {
    "mobilenet-blocks": "head",
    "mobilenet-probe": "head",
    "hf-vit": "path",
    "hf-blip": "path",
}
"""Per backend, the spec option that takes the artefact's local path."""
ARCHIVED_BACKENDS = frozenset({"hf-vit", "hf-blip"})
"""Backends whose artefact is a directory packed by :mod:`deeptrust.processors.artefact_archive`."""

_SUFFIX = re.compile(r"^\.[A-Za-z0-9]{1,10}$")

ModelLoader = Callable[[ModelSpec], BatchModel[Any, Any]]


class Outcome(StrEnum):
    """What :meth:`ModelFollower.handle` did with one update event."""

    IGNORED = "ignored"
    """Not for this stage: another model, task or backend, or a candidate."""
    CURRENT = "current"
    """The version (and artefact) already serving or waiting to be swapped in."""
    LOADED = "loaded"
    """A new version is loaded and waits for the stage to swap it in."""
    FAILED = "failed"
    """The update could not be used; the stage keeps its model."""


class UpdateRefused(Exception):
    """An update's artefact cannot be used; ``reason`` says why, for the log.

    ``transient`` marks what a later try may fix (an object not yet visible in the store);
    a hash mismatch or a file the backend cannot load stays broken however often it is
    fetched.
    """

    def __init__(self, reason: str, transient: bool = False) -> None:
        """Keep the reason as the message."""
        super().__init__(reason)
        self.reason = reason
        self.transient = transient


ARTEFACT_RETRY = RetryPolicy(initial_s=1.0, max_s=300.0)
"""A promoted artefact not yet in the store: tried again from 1 s, doubling, to 5 minutes."""


@dataclass(frozen=True)
class _Retry:
    """The latest followed update, whose load failed for a reason a later try may fix."""

    event: ModelUpdateEvent
    attempt: int
    due: float


@dataclass(frozen=True)
class LoadedModel:
    """A model built from a production version, ready for the stage to swap in."""

    model: BatchModel[Any, Any]
    version: str
    sha256: str


def is_followed(event: ModelUpdateEvent, model: str, spec: ModelSpec) -> bool:
    """Tell whether ``event`` promotes a production version this stage can serve.

    A stage follows one registered model and can only load artefacts of its own task and
    backend; candidates are for the canary, not for every replica.
    """
    return (
        event.model == model
        and event.alias == PRODUCTION
        and event.task == spec.task
        and event.backend == spec.backend
    )


def latest_production(
    events: Iterable[ModelUpdateEvent], model: str, spec: ModelSpec
) -> ModelUpdateEvent | None:
    """Return the last production event for ``model`` in log order, or ``None``.

    The changelog is keyed by ``model:alias``, so every production event of a model lies in
    one partition, in the order the registry promoted them; the last one wins, which also
    makes a rollback (an older version promoted again) work.
    """
    latest: ModelUpdateEvent | None = None
    for event in events:
        if is_followed(event, model, spec):
            latest = event
    return latest


def sha256_hex(data: bytes) -> str:
    """Return the SHA-256 hex digest that ``artifact_sha256`` carries."""
    return hashlib.sha256(data).hexdigest()


class ArtefactCache:
    """Local copies of artefacts, named by their SHA-256, written atomically.

    Backends load from a path, and a stage restarted on the same disk finds the artefact
    again without fetching it. A file is only ever used after its hash was checked.
    """

    def __init__(self, store: ObjectStore, directory: Path) -> None:
        """Fetch through ``store`` into ``directory`` (created on first use)."""
        self._store = store
        self.directory = directory

    def path_for(self, uri: str, sha256: str) -> Path:
        """Where the artefact with ``sha256`` lives; the URI's suffix is kept for people."""
        suffix = PurePosixPath(urlparse(uri).path).suffix
        return self.directory / f"{sha256}{suffix if _SUFFIX.match(suffix) else ''}"

    def fetch(self, uri: str, sha256: str) -> Path:
        """Return a local path holding the bytes behind ``uri``, checked against ``sha256``.

        Raises :class:`UpdateRefused` when the object is missing, not allowed, too large,
        or its bytes hash to something else.
        """
        path = self.path_for(uri, sha256)
        if path.is_file() and sha256_hex(path.read_bytes()) == sha256:
            return path
        try:
            data = self._store.get(uri)
        except InvalidInput as error:
            missing = error.reason is Reason.MISSING_OBJECT
            raise UpdateRefused(str(error), transient=missing) from error
        actual = sha256_hex(data)
        if actual != sha256:
            raise UpdateRefused(f"sha256 mismatch: {uri} has {actual}, the event says {sha256}")
        write_atomically(path, lambda file: file.write(data))
        return path

    def prune(self, keep: Collection[str], spare: int = 2) -> list[str]:
        """Delete cached artefacts but those in ``keep`` and the ``spare`` newest others.

        Spares make a rollback to a recent version load from disk; without pruning every
        promotion of a fine-tuned ViT would leave hundreds of megabytes behind.
        """
        if not self.directory.is_dir():
            return []
        groups: dict[str, list[Path]] = {}
        for path in self.directory.iterdir():
            if not path.name.startswith("."):  # staging folders belong to a load in flight
                groups.setdefault(path.name.split(".")[0], []).append(path)

        def newest(sha: str) -> float:
            return max(path.stat().st_mtime for path in groups[sha])

        others = sorted((sha for sha in groups if sha not in keep), key=newest, reverse=True)
        doomed = others[spare:]
        for sha in doomed:
            for path in groups[sha]:
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
        return doomed

    def unpacked(self, archive: Path, sha256: str) -> Path:
        """The directory that the checked archive ``archive`` unpacks to, unpacked once.

        The folder is named by the archive's hash, so it never changes once there; it is
        unpacked beside it and renamed into place, so a crash leaves no half folder behind.
        """
        folder = self.directory / f"{sha256}.d"
        if folder.is_dir():
            return folder
        staging = Path(tempfile.mkdtemp(prefix=f".{sha256[:12]}-", dir=self.directory))
        try:
            unpack_archive(archive.read_bytes(), staging)
            staging.rename(folder)
        except (tarfile.TarError, EOFError, zlib.error) as error:
            raise UpdateRefused(f"cannot unpack {archive.name}: {error}") from error
        except OSError:
            if not folder.is_dir():  # not another process that unpacked it first
                raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return folder


class ReloadMetrics(Collector):
    """Reload counts and the serving version, as a Prometheus collector.

    The counts are plain attributes (tests and logs read them) and :meth:`collect` turns
    them into ``deeptrust_model_reloads_total{stage,model,outcome}`` and the info-style
    ``deeptrust_model_version{stage,model,version} 1``, so the collector can be registered
    into whichever registry the stage process serves.
    """

    def __init__(self, stage: str, model: str, serving_version: str) -> None:
        """Start at zero reloads, serving ``serving_version`` (the shipped default)."""
        self.stage = stage
        self.model = model
        self._lock = threading.Lock()
        self._counts = {Outcome.LOADED: 0, Outcome.FAILED: 0}
        self._serving = serving_version

    @property
    def loaded(self) -> int:
        """Updates loaded so far."""
        with self._lock:
            return self._counts[Outcome.LOADED]

    @property
    def failed(self) -> int:
        """Updates refused so far."""
        with self._lock:
            return self._counts[Outcome.FAILED]

    @property
    def serving_version(self) -> str:
        """The version the stage serves now."""
        with self._lock:
            return self._serving

    def count(self, outcome: Outcome) -> int:
        """Count one reload ``outcome`` (loaded or failed); return the new total."""
        with self._lock:
            self._counts[outcome] += 1
            return self._counts[outcome]

    def serve(self, version: str) -> None:
        """Record that the stage now serves ``version``."""
        with self._lock:
            self._serving = version

    def describe(self) -> Iterable[Metric]:
        """Name the two families, so a registry can reject a duplicate."""
        return self._families({}, None)

    def collect(self) -> Iterable[Metric]:
        """Return the current counts and serving version."""
        with self._lock:
            counts, serving = dict(self._counts), self._serving
        return self._families(counts, serving)

    def _families(self, counts: dict[Outcome, int], serving: str | None) -> Iterator[Metric]:
        reloads = CounterMetricFamily(
            "deeptrust_model_reloads",
            "Model updates the stage loaded or refused.",
            labels=["stage", "model", "outcome"],
        )
        for outcome, count in counts.items():
            reloads.add_metric([self.stage, self.model, outcome.value], count)
        version = GaugeMetricFamily(
            "deeptrust_model_version",
            "1 for the model version the stage serves.",
            labels=["stage", "model", "version"],
        )
        if serving is not None:
            version.add_metric([self.stage, self.model, serving], 1)
        yield reloads
        yield version


class ModelFollower:
    """Follows ``models.v1`` for one registered model and prepares its production versions.

    ``start()`` reads the topic to its end and loads the latest production version, if
    any; a daemon thread then loads each later one. :meth:`take_pending` hands a loaded
    model to the stage, which calls it between batches.
    """

    def __init__(
        self,
        kafka: KafkaSettings,
        store: ObjectStore,
        model: str,
        spec: ModelSpec,
        cache_dir: Path,
        *,
        stage: str = "detect",
        start_timeout_s: float = 30.0,
        poll_timeout_s: float = 0.5,
        consumer_factory: ConsumerFactory = Consumer,
        loader: ModelLoader = load_model,
    ) -> None:
        """Follow ``model`` for a stage whose detector is ``spec``; nothing connects yet."""
        if spec.backend not in ARTEFACT_OPTIONS:
            known = ", ".join(sorted(ARTEFACT_OPTIONS))
            raise ValueError(f"cannot follow models of backend {spec.backend!r}; known: {known}")
        self.model = model
        self.spec = spec
        self.topic = TopicNames(kafka.topic_prefix)(Topic.MODELS)
        self.metrics = ReloadMetrics(stage, model, spec.version)
        self._kafka = kafka
        self._cache = ArtefactCache(store, cache_dir)
        self._start_timeout_s = start_timeout_s
        self._poll_timeout_s = poll_timeout_s
        self._consumer_factory = consumer_factory
        self._loader = loader
        self._lock = threading.Lock()
        self._pending: LoadedModel | None = None
        self._target: tuple[str, str] | None = None
        """(version, sha256) of the model last loaded: serving, or pending."""
        self.last_failure: str | None = None
        self._stop = threading.Event()
        self._tail: TopicTail | None = None
        self._thread: threading.Thread | None = None
        self._retry: _Retry | None = None
        """Only ever touched by the thread that calls :meth:`handle`: start(), then the
        follower thread."""

    def start(self) -> None:
        """Read the topic to its current end, load the latest production version, follow on.

        Blocks until the end is reached; raises ``TimeoutError`` after the start-up deadline
        (a stage that cannot tell which version is in production should not guess).
        """
        if self._tail is not None:
            raise RuntimeError("start() called twice")
        tail = TopicTail(
            self._kafka,
            [self.topic],
            timeout_s=self._start_timeout_s,
            consumer_factory=self._consumer_factory,
            name="model-follower",
        )
        self._tail = tail
        try:
            tail.open(BEGINNING)
            events = self._decode_all(tail.read_to_end(self._start_timeout_s))
            log.info("read %d model updates from %s", len(events), self.topic)
            latest = latest_production(events, self.model, self.spec)
            if latest is None:
                log.info("no production version of %s on %s yet", self.model, self.topic)
            else:
                self.handle(latest)
        except BaseException:
            self._tail = None
            tail.close()
            raise
        self._thread = threading.Thread(
            target=self._follow, args=(tail,), name=f"follow-{self.model}", daemon=True
        )
        self._thread.start()

    def take_pending(self) -> LoadedModel | None:
        """Return the loaded model waiting to be swapped in (once), and mark it serving."""
        with self._lock:
            pending, self._pending = self._pending, None
        if pending is not None:
            self.metrics.serve(pending.version)
        return pending

    def handle(self, event: ModelUpdateEvent) -> Outcome:
        """Act on one update: ignore it, or fetch, check and load its artefact.

        Never raises for a bad update: the reason is logged and counted, and the stage keeps
        serving what it has.
        """
        if not is_followed(event, self.model, self.spec):
            if event.model == self.model and event.alias == PRODUCTION:
                # Production moved to a model this stage cannot run: it now serves something
                # else than production, which must show on the failure counter, not only here.
                self._retry = None
                return self._refused(
                    event,
                    f"backend {event.task}/{event.backend}, this stage runs "
                    f"{self.spec.task}/{self.spec.backend}",
                )
            return Outcome.IGNORED
        attempt = self._retry.attempt + 1 if self._retry and self._retry.event is event else 1
        self._retry = None
        with self._lock:
            if self._target == (event.version, event.artifact_sha256):
                return Outcome.CURRENT
        try:
            loaded = self._load(event)
        except Exception as error:
            refusal = error if isinstance(error, UpdateRefused) else None
            if refusal is None or refusal.transient:  # a store or network error: try later
                delay = ARTEFACT_RETRY.delay_s(attempt)
                self._retry = _Retry(event, attempt, time.monotonic() + delay)
            return self._refused(event, refusal.reason if refusal else repr(error))
        with self._lock:
            self._pending = loaded
            previous, self._target = self._target, (loaded.version, loaded.sha256)
        keep = {loaded.sha256} | ({previous[1]} if previous else set())
        try:
            self._cache.prune(keep)
        except OSError as error:  # a full or read-only cache must not cost the update
            log.warning("could not prune %s: %s", self._cache.directory, error)
        total = self.metrics.count(Outcome.LOADED)
        log.info(
            "loaded %s version %s (sha256 %s, %d loaded so far); swapping in at the next batch",
            self.model,
            event.version,
            event.artifact_sha256[:12],
            total,
        )
        return Outcome.LOADED

    def _refused(self, event: ModelUpdateEvent, reason: str) -> Outcome:
        """Count and log an update this stage cannot serve; it keeps what it has."""
        self.last_failure = reason
        total = self.metrics.count(Outcome.FAILED)
        wait = self._retry.due - time.monotonic() if self._retry else None
        retry = "" if wait is None else f"; trying again in {wait:.0f}s"
        log.error(
            "refused %s version %s (%d refused so far); keeping version %s: %s%s",
            self.model,
            event.version,
            total,
            self.metrics.serving_version,
            reason,
            retry,
        )
        return Outcome.FAILED

    def retry_due(self) -> Outcome | None:
        """Try the latest update again if its last failure may pass and its time has come."""
        retry = self._retry
        if retry is None or time.monotonic() < retry.due:
            return None
        return self.handle(retry.event)

    def close(self) -> None:
        """Stop following and close the consumer; safe to call more than once."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(self._poll_timeout_s + 10.0)
            if thread.is_alive():
                log.warning("model follower thread did not stop in time")
        elif self._tail is not None:
            self._tail.close()
        self._tail = None

    def _load(self, event: ModelUpdateEvent) -> LoadedModel:
        path = self._cache.fetch(event.artifact_uri, event.artifact_sha256)
        if self.spec.backend in ARCHIVED_BACKENDS:
            path = self._cache.unpacked(path, event.artifact_sha256)
        option = ARTEFACT_OPTIONS[self.spec.backend]
        spec = replace(
            self.spec, version=event.version, options={**self.spec.options, option: str(path)}
        )
        try:
            model = self._loader(spec)
        except Exception as error:
            raise UpdateRefused(f"cannot load {path}: {error}") from error
        return LoadedModel(model, event.version, event.artifact_sha256)

    def _follow(self, tail: TopicTail) -> None:
        """The daemon thread: poll, decode, handle, until :meth:`close`.

        Trouble with one poll or one update is logged and the thread follows on: a stage
        that stopped following would silently serve an old version forever.
        """
        try:
            while not self._stop.is_set():
                try:
                    for event in self._decode_all(tail.poll(self._poll_timeout_s)):
                        self.handle(event)
                    self.retry_due()
                except KafkaException as error:
                    log.warning("polling %s failed: %s", self.topic, error)
                    self._stop.wait(self._poll_timeout_s)
                except Exception:
                    log.exception("following %s failed; following on", self.topic)
                    self._stop.wait(self._poll_timeout_s)
        finally:
            tail.close()

    def _decode_all(self, messages: Sequence[Message]) -> list[ModelUpdateEvent]:
        events = []
        for message in messages:
            error = message.error()
            if error is not None:
                log.warning("%s: %s", self.topic, error)
                continue
            if message.value() is None:
                continue  # a tombstone: compaction removes the key
            try:
                events.append(decode(message.value(), message.headers(), ModelUpdateEvent))
            except InvalidInput as invalid:
                log.warning(
                    "skipping %s offset %s: %s", self.topic, message.offset(), invalid.detail
                )
        return events
