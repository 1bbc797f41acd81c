"""The version being served: Milvus collection + the user tower and catalogue of the same model version.

`ActiveIndex` follows the version pointer in Milvus from a background thread. When the pointer moves,
the model version's user tower and popularity lists are loaded first and then swapped in with the
collection name in one reference assignment, so a request sees either the old or the new version,
never a mix. When Milvus cannot be reached at start-up, the registry's `latest` model still gives the
popularity fallback (and the user's favourite genres), so the service answers degraded instead of not
at all.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from recsys.candidates import schema
from recsys.candidates.catalog import load_catalog
from recsys.candidates.filters import GenreVocabulary
from recsys.candidates.milvus import Milvus
from recsys.candidates.popularity import PopularityIndex
from recsys.candidates.segments import DemographicSegments, build_segments
from recsys.candidates.versions import VersionInfo, VersionStore
from recsys.common.breaker import Breaker
from recsys.model.bundle import load_spec
from recsys.model.layout import BundleLayout
from recsys.model.registry import Registry, RegistryError, resolve_model_dir
from recsys.model.spec import FeatureSpec
from recsys.model.user_encoder import UserEncoder

log = logging.getLogger("recsys.candidates.active")

UNAVAILABLE_SYNC_EVERY = 5  # refreshes between availability syncs
MAX_UNAVAILABLE_SYNC = 16384  # one Milvus query's row limit


@dataclass
class ServingVersion:
    """Everything one request needs, consistent with one index version."""

    info: VersionInfo
    encoder: UserEncoder
    spec: FeatureSpec
    popularity: PopularityIndex
    vocabulary: GenreVocabulary
    user_genre_columns: np.ndarray  # per index genre: column of user_genre_<g> in spec.user_features, or -1
    segments: DemographicSegments = field(default_factory=DemographicSegments)
    searchable: bool = True  # False: built from the registry alone (no collection known)

    @property
    def label(self) -> str:
        return self.info.collection if self.searchable else f"fallback:{self.info.model_version}"


def _model_dir(info: VersionInfo, models_root: str) -> Path:
    if info.model_dir and BundleLayout(info.model_dir).two_tower.is_dir():
        return Path(info.model_dir)
    return resolve_model_dir(models_root, info.model_version)


def load_serving_version(info: VersionInfo, model_dir: Path, searchable: bool = True) -> ServingVersion:
    """Load the user tower, spec and catalogue (no embeddings) of `info`'s model version."""
    spec = load_spec(model_dir)
    encoder = UserEncoder.load(BundleLayout(model_dir).user_tower)
    catalog = load_catalog(model_dir, with_embeddings=False)
    genre_names = dict(zip(spec.genres, spec.genre_names, strict=True))
    columns = {name: i for i, name in enumerate(spec.user_features)}
    user_cols = np.array([columns.get(f"user_genre_{genre_names.get(g, '')}", -1) for g in info.genres], dtype=np.int64)
    popularity = PopularityIndex(catalog, info.genres)
    return ServingVersion(
        info=info,
        encoder=encoder,
        spec=spec,
        popularity=popularity,
        vocabulary=GenreVocabulary(info.genres),
        user_genre_columns=user_cols,
        segments=build_segments(spec, model_dir, popularity),
        searchable=searchable,
    )


def registry_fallback(models_root: str) -> ServingVersion | None:
    """A non-searchable version from the registry's latest model (Milvus unknown at start-up)."""
    try:
        registry = Registry(models_root)
        version = registry.latest()
        model_dir = resolve_model_dir(models_root)
    except (RegistryError, OSError) as exc:
        log.warning("no model in the registry for the fallback", extra={"error": str(exc)})
        return None
    spec = load_spec(model_dir)
    info = VersionInfo(
        collection="",
        model_version=version or model_dir.name,
        model_dir=str(model_dir),
        dim=0,
        genres=list(spec.genres[: schema.MAX_GENRE_FIELDS]),
        count=0,
        index_type="",
    )
    return load_serving_version(info, model_dir, searchable=False)


class ActiveIndex:
    """Holds the current ServingVersion and keeps it in step with the pointer in Milvus."""

    def __init__(self, milvus: Milvus, base: str, models_root: str, refresh_s: float, milvus_breaker: Breaker) -> None:
        self.milvus = milvus
        self.base = base
        self.models_root = models_root
        self.refresh_s = refresh_s
        self.breaker = milvus_breaker
        self.current: ServingVersion | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._refresh_lock = threading.Lock()
        self._ticks = 0
        self._last_reconnect = 0.0
        self.last_error = ""

    def store(self) -> VersionStore:
        return VersionStore(self.milvus.client, self.base)

    def start(self) -> ActiveIndex:
        """Load the active version (or the registry fallback) and start following the pointer."""
        try:
            self.refresh_once()
        except Exception as exc:  # Milvus down at start-up: serve the fallback
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("index version unknown at start-up", extra={"error": self.last_error})
        if self.current is None:
            self.current = registry_fallback(self.models_root)
        self._thread = threading.Thread(target=self._run, name="candidates-index-watch", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.refresh_s):
            try:
                self.refresh_once()
                self.last_error = ""
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
                if error != self.last_error:  # once per distinct error, not every refresh
                    log.warning("index refresh failed", extra={"error": error})
                self.last_error = error
                self._recover()

    def _recover(self) -> None:
        """Milvus unreachable: reconnect (restarting a dead Milvus Lite child we own), at most once per cool-down."""
        now = time.monotonic()
        if now - self._last_reconnect < self.breaker.cooldown_s:
            return
        self._last_reconnect = now
        try:
            client = self.milvus.reconnect()
            current = self.current
            if current is not None and current.searchable:
                client.load_collection(current.info.collection, timeout=30)
            self.breaker.success()
            log.info("milvus reconnected", extra={"target": self.milvus.target.describe()})
        except Exception as exc:
            log.warning("milvus reconnect failed", extra={"error": f"{type(exc).__name__}: {exc}"})

    def refresh_once(self) -> bool:
        """Follow the pointer; True when a new version was swapped in."""
        with self._refresh_lock:
            store = self.store()
            pointer = store.pointer(timeout=5.0)
            current = self.current
            swapped = False
            if pointer is not None and (current is None or current.info.collection != pointer.active):
                info = store.version(pointer.active, timeout=5.0)
                if info is None:
                    raise LookupError(f"active collection {pointer.active} has no version record")
                model_dir = _model_dir(info, self.models_root)
                if current is not None and Path(current.info.model_dir) == model_dir:
                    new = ServingVersion(
                        info=info,
                        encoder=current.encoder,
                        spec=current.spec,
                        popularity=PopularityIndex(current.popularity.catalog, info.genres),
                        vocabulary=GenreVocabulary(info.genres),
                        user_genre_columns=current.user_genre_columns,
                        segments=current.segments,
                    )
                else:
                    new = load_serving_version(info, model_dir)
                new.info.model_dir = str(model_dir)
                self._warm_up(new)
                self._sync_unavailable(new)
                self.current = new
                swapped = True
                log.info("index version swapped in", extra={"collection": info.collection})
            self._ticks += 1
            if not swapped and self.current is not None and self._ticks % UNAVAILABLE_SYNC_EVERY == 0:
                self._sync_unavailable(self.current)
            return swapped

    def _warm_up(self, version: ServingVersion) -> None:
        """One search before serving: the client fetches and caches the collection schema on first use."""
        vector = np.zeros(version.info.dim, dtype=np.float32)
        vector[0] = 1.0
        self.milvus.client.search(
            version.info.collection, [vector.tolist()], limit=1, search_params=schema.search_params({}, 1), timeout=30
        )

    def _sync_unavailable(self, version: ServingVersion) -> None:
        """Availability as Milvus holds it (upserts may have changed it since the model was trained)."""
        if not version.searchable:
            return
        rows = self.milvus.client.query(
            version.info.collection,
            filter=f"{schema.AVAILABLE_FIELD} == false",
            output_fields=[schema.ID_FIELD],
            limit=MAX_UNAVAILABLE_SYNC,
            timeout=5.0,
        )
        version.popularity.set_unavailable(r[schema.ID_FIELD] for r in rows)

    def wait_for(self, collection: str, timeout_s: float = 10.0) -> bool:
        """Block until `collection` is served (tests and tools)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            current = self.current
            if current is not None and current.info.collection == collection:
                return True
            time.sleep(0.05)
        return False
