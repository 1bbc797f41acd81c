"""Retrieve and SimilarItems: validation, user embedding, Milvus ANN with filters, popularity fill, fallback.

Sources per candidate: ANN (Milvus), GENRE_POPULAR (popular items of the user's favourite genres, or of
the seed item's genres), POPULAR. A cold-start user (no history, unknown to the feature store) gets a
tower embedding from features alone for part of the list and segment popularity for the rest. When
Milvus fails or exceeds its deadline, the whole answer comes from the in-memory popularity lists and
the response says `degraded` with the reason; a valid request never gets an error for that.
"""

from __future__ import annotations

import json
import logging
import math
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

import grpc
import numpy as np
from prometheus_client import Counter

from recsys.candidates import schema
from recsys.candidates.active import ActiveIndex, ServingVersion
from recsys.candidates.changes import CatalogChanges, Skip
from recsys.candidates.filters import FilterSpec, check_unknown_fields, milvus_expr, parse_filter, validate_item_ids
from recsys.candidates.milvus import Milvus
from recsys.candidates.search_batch import BatchTimeout, SearchBatcher
from recsys.candidates.settings import RetrievalSettings
from recsys.candidates.top_k import search_top_k_many
from recsys.common.breaker import Breaker
from recsys.common.errors import InvalidArgument, NotFound, Unavailable
from recsys.common.feature_client import FeatureClient, UserContext, matrix_row
from recsys.v1 import candidates_pb2

log = logging.getLogger("recsys.candidates.service")

ANN = candidates_pb2.CANDIDATE_SOURCE_ANN
POPULAR = candidates_pb2.CANDIDATE_SOURCE_POPULAR
GENRE_POPULAR = candidates_pb2.CANDIDATE_SOURCE_GENRE_POPULAR

DEGRADED = Counter("recsys_candidates_degraded_total", "Answers served without Milvus", ["method", "reason"])
SOURCES = Counter("recsys_candidates_items_total", "Candidates returned by source", ["source"])
FAVOURITE_GENRES = 3
MAX_RECENT = 1000
# Excluded ids are dropped from an over-fetched ANN answer while k + excluded stays within this: cheaper than
# Milvus evaluating a long `item_id not in [...]` expression (about 1 ms less at 500 ids, 100k items). Beyond
# it, Milvus filters them (its top-k limit is 16384).
POST_FILTER_MAX = 4096


class SearchFailed(RuntimeError):
    """Milvus did not answer in time or answered with an error; `reason` is short and safe to show."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Retriever:
    """The candidate service's logic, over protos (the servicer only forwards)."""

    def __init__(
        self,
        active: ActiveIndex,
        milvus: Milvus,
        fetcher: FeatureClient | None,
        settings: RetrievalSettings,
        milvus_breaker: Breaker,
        search_workers: int = 16,
        changes: CatalogChanges | None = None,
    ) -> None:
        self.active = active
        self.changes = changes
        self.milvus = milvus
        self.fetcher = fetcher
        self.settings = settings
        self.breaker = milvus_breaker
        self._pool = ThreadPoolExecutor(max_workers=search_workers, thread_name_prefix="milvus-search")
        self._batcher = SearchBatcher(settings.search_batch)

    @property
    def removed(self) -> frozenset[str]:
        """Items deleted or unavailable in the live catalogue: no source returns them."""
        return self.changes.removed if self.changes is not None else frozenset()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    # --- shared helpers -------------------------------------------------------------------------

    def _version(self) -> ServingVersion:
        version = self.active.current
        if version is None:
            raise Unavailable("no index version and no registry model to serve from yet")
        return version

    def _check_k(self, k: int) -> None:
        if k <= 0:
            raise InvalidArgument("k", f"must be positive, got {k}")
        if k > self.settings.max_k:
            raise InvalidArgument("k", f"must be at most {self.settings.max_k}, got {k}")

    def _deadline(self, time_remaining: float | None) -> float:
        timeout = self.settings.search_timeout_s
        if time_remaining is not None:
            timeout = min(timeout, max(0.001, time_remaining - 0.002))
        return timeout

    def _call(self, timeout: float, fn, *args, on_stub: bool = False, **kwargs):
        """Run a Milvus call with a hard deadline. pymilvus' own calls run on the pool: with their retry loops
        they may block longer than their timeout. An `on_stub` call is one gRPC call with `timeout` as its
        deadline, which gRPC enforces, so it runs in this thread without the pool's hop."""
        if not self.breaker.allow():
            raise SearchFailed(f"milvus unavailable ({self.breaker.last_error})")
        try:
            if on_stub:
                result = fn(*args, timeout=timeout, **kwargs)
            else:
                future = self._pool.submit(fn, *args, timeout=timeout, **kwargs)
                try:
                    result = future.result(timeout=timeout + 0.005)
                except FutureTimeout:
                    future.cancel()
                    raise
        except Exception as exc:
            if _deadline_exceeded(exc) if on_stub else isinstance(exc, FutureTimeout):
                self.breaker.failure("timeout")
                raise SearchFailed(f"milvus timeout after {timeout * 1000:.0f} ms") from None
            reason = _short_reason(exc)
            self.breaker.failure(reason)
            raise SearchFailed(f"milvus error: {reason}") from exc
        self.breaker.success()
        return result

    def _ann(self, version: ServingVersion, vector: np.ndarray, k: int, spec: FilterSpec, timeout: float):
        """The top k [(item_id, score)] passing `spec`; excluded ids over-fetched and dropped here when few."""
        excluded = spec.exclude_ids
        if not excluded or k + len(excluded) > POST_FILTER_MAX:
            return self._search(version, vector, k, milvus_expr(spec), timeout)
        hits = self._search(version, vector, k + len(excluded), milvus_expr(spec.without_ids()), timeout)
        return [hit for hit in hits if hit[0] not in excluded][:k]

    def _search(self, version: ServingVersion, vector: np.ndarray, limit: int, expr: str, timeout: float):
        """[(item_id, score)] from Milvus; retried once on a freshly read pointer if the collection vanished."""
        for attempt in range(2):
            try:
                return self._search_batched(version.info.collection, vector, limit, expr, timeout)
            except SearchFailed as exc:
                if attempt == 0 and "collection" in exc.reason.lower() and "not" in exc.reason.lower():
                    self.breaker.success()  # a moved pointer, not a sick Milvus
                    self.active.refresh_once()
                    fresh = self.active.current
                    if fresh is not None and fresh.searchable and fresh.info.collection != version.info.collection:
                        version = fresh
                        continue
                raise
        raise AssertionError("unreachable")

    def _search_batched(self, collection: str, vector: np.ndarray, limit: int, expr: str, timeout: float):
        """One search, sent together with concurrent ones on the same collection and filter (search_batch.py)."""

        def search_many(vectors: list[np.ndarray], batch_limit: int, batch_timeout: float):
            params = schema.search_params(self.settings.search_params or {}, batch_limit)
            return self._call(
                batch_timeout,
                search_top_k_many,
                self.milvus.client,
                collection,
                vectors,
                on_stub=True,
                limit=batch_limit,
                filter=expr,
                search_params=params,
            )

        try:
            return self._batcher.search((collection, expr), search_many, vector, limit, timeout)
        except BatchTimeout:
            raise SearchFailed(f"milvus timeout after {timeout * 1000:.0f} ms (queued behind a search)") from None

    # --- Retrieve -------------------------------------------------------------------------------

    def _user_context(self, request, version: ServingVersion, metadata) -> UserContext:
        names = version.spec.user_features
        recent = validate_item_ids(request.recent_item_ids, "recent_item_ids", MAX_RECENT)
        matrix = request.user_features
        has_features = request.HasField("user_features") and len(matrix.names) > 0
        if has_features:
            _check_matrix(matrix, "user_features")
        if has_features or recent:
            row, found = matrix_row(matrix, names) if has_features else (None, False)
            # the gateway passes recent items most recent first, like GetRecentItems
            return UserContext(features=row, found=found or bool(recent), recent_items=recent[::-1], source="request")
        if self.fetcher is not None and self.fetcher.enabled and request.user_id:
            return self.fetcher.user_context(request.user_id, names, metadata)
        return UserContext()

    def _favourite_genres(self, version: ServingVersion, context: UserContext) -> tuple[int, ...]:
        scores = np.zeros(len(version.info.genres), dtype=np.float64)
        if context.features is not None:
            cols = version.user_genre_columns
            ok = cols >= 0
            values = np.nan_to_num(context.features[cols[ok]], nan=0.0)
            scores[ok] = values
        if not scores.any() and context.recent_items:
            scores = version.popularity.genres_of_items(context.recent_items)
        if not scores.any():
            return ()
        top = np.argsort(-scores, kind="stable")[:FAVOURITE_GENRES]
        return tuple(int(g) for g in top if scores[g] > 0)

    def retrieve(self, request, time_remaining: float | None = None, metadata=()) -> candidates_pb2.RetrieveResponse:
        check_unknown_fields(request, "request")
        self._check_k(request.k)
        version = self._version()
        spec = parse_filter(request.filter, version.vocabulary, self.settings.max_exclude)
        context = self._user_context(request, version, metadata)
        if self.settings.exclude_recent:
            spec = spec.with_excluded(context.recent_items)
        cold = not context.recent_items and not context.found
        k = request.k
        removed = self.removed
        reasons = [] if not context.error else [context.error]
        picked: list[tuple[str, float, int]] = []
        ann: list[tuple[str, float]] = []
        degraded_search = ""
        if version.searchable:
            vector = version.encoder.embed(request.user_id or None, context.features, context.recent_items)
            try:
                ann = self._ann(version, vector, k, spec, self._deadline(time_remaining))
            except SearchFailed as exc:
                degraded_search = exc.reason
        else:
            degraded_search = f"no searchable index ({self.active.last_error or 'index not built'})"
        if degraded_search:
            reasons.insert(0, degraded_search)
            DEGRADED.labels("Retrieve", "milvus").inc()
        if removed:
            ann = [(item, score) for item, score in ann if item not in removed]
        ann_quota = k if not cold else math.ceil(k * self.settings.cold_start_ann_share)
        picked.extend((item, score, ANN) for item, score in ann[:ann_quota])
        seen = Skip({item for item, _, _ in picked}, removed)
        favourite = self._favourite_genres(version, context)
        segment = version.segments.segment_of(context.features)
        verify = None if degraded_search else self._verifier(version, spec, self._deadline(time_remaining))
        try:
            self._fill(version, picked, seen, spec, k, favourite, verify, segment)
        except SearchFailed as exc:
            degraded_search = exc.reason
            reasons.insert(0, exc.reason)
            self._fill(version, picked, seen, spec, k, favourite, None, segment)
        for item, score in ann[ann_quota:]:  # popularity could not fill the rest: more ANN
            if len(picked) >= k:
                break
            if item not in seen:
                picked.append((item, score, ANN))
                seen.add(item)
        return self._response(picked, version, bool(degraded_search) or bool(context.error), reasons)

    def _fill(
        self,
        version: ServingVersion,
        picked: list,
        seen: set[str],
        spec: FilterSpec,
        k: int,
        genres: tuple[int, ...],
        verify=None,
        segment: int | None = None,
    ) -> None:
        """Append popular items up to k, by segment: the favourite genres' (GENRE_POPULAR), the user's
        demographic segment's, then everyone's (POPULAR). `verify` (when Milvus is up) drops picks that
        Milvus says no longer pass the filter (availability changed since the in-memory lists synced)."""
        positions = version.segments.lists.get(segment) if segment is not None else None
        passes = [(genres, None, GENRE_POPULAR)] if genres else []
        if positions is not None:
            passes.append(((), positions, POPULAR))
        passes.append(((), None, POPULAR))
        for segment_genres, segment_positions, source in passes:
            need = k - len(picked)
            if need <= 0:
                break
            picks = version.popularity.top(
                need + need // 2 + 8 if verify else need, spec, seen, segment_genres, segment_positions
            )
            if verify is not None and picks:
                picks = verify(picks)
            for pick in picks[:need]:
                picked.append((pick.item_id, pick.score, source))
                seen.add(pick.item_id)

    def _verifier(self, version: ServingVersion, spec: FilterSpec, timeout: float):
        """A check of popularity picks against the filter as Milvus holds it (one query per segment)."""
        base = milvus_expr(spec.without_ids())

        def verify(picks: list) -> list:
            ids = ", ".join(json.dumps(p.item_id, ensure_ascii=False) for p in picks)
            expr = " and ".join(part for part in (base, f"{schema.ID_FIELD} in [{ids}]") if part)
            rows = self._call(
                timeout,
                self.milvus.client.query,
                version.info.collection,
                filter=expr,
                output_fields=[schema.ID_FIELD],
                limit=len(picks),
            )
            ok = {r[schema.ID_FIELD] for r in rows}
            return [p for p in picks if p.item_id in ok]

        return verify

    def _response(self, picked, version: ServingVersion, degraded: bool, reasons: list[str]):
        response = candidates_pb2.RetrieveResponse(
            degraded=degraded,
            degraded_reason="; ".join(r for r in reasons if r) if degraded else "",
            index_version=version.label,
        )
        counts: dict[int, int] = {}
        add = response.candidates.add
        for item, score, source in picked:
            candidate = add()  # fields set one by one: half the cost of add(**fields) in upb
            candidate.item_id = item
            candidate.score = score
            candidate.source = source
            counts[source] = counts.get(source, 0) + 1
        for source, n in counts.items():
            SOURCES.labels(candidates_pb2.CandidateSource.Name(source)).inc(n)
        return response

    # --- SimilarItems ---------------------------------------------------------------------------

    def similar_items(self, request, time_remaining: float | None = None) -> candidates_pb2.SimilarItemsResponse:
        check_unknown_fields(request, "request")
        if not request.item_id:
            raise InvalidArgument("item_id", "required")
        validate_item_ids([request.item_id], "item_id", 1)
        self._check_k(request.k)
        version = self._version()
        spec = parse_filter(request.filter, version.vocabulary, self.settings.max_exclude)
        spec = spec.with_excluded([request.item_id])
        timeout = self._deadline(time_remaining)
        picked: list[tuple[str, float, int]] = []
        degraded = ""
        if version.searchable:
            try:
                rows = self._call(
                    timeout,
                    self.milvus.client.get,
                    version.info.collection,
                    ids=[request.item_id],
                    output_fields=[schema.VECTOR_FIELD],
                )
                if not rows:
                    raise NotFound(f"item_id: unknown item {request.item_id!r}")
                vector = np.asarray(rows[0][schema.VECTOR_FIELD], dtype=np.float32)
                hits = self._ann(version, vector, request.k, spec, timeout)
                removed = self.removed
                picked.extend((item, score, ANN) for item, score in hits if item not in removed)
            except SearchFailed as exc:
                degraded = exc.reason
        else:
            degraded = "no searchable index"
        if degraded or len(picked) < request.k:
            rows = version.popularity.rows_of([request.item_id])
            if degraded and not len(rows):
                raise NotFound(f"item_id: unknown item {request.item_id!r}")
            if degraded:
                DEGRADED.labels("SimilarItems", "milvus").inc()
            genres = tuple(np.flatnonzero(version.popularity.genres_of_items([request.item_id]) > 0).tolist())
            seen = Skip({p[0] for p in picked} | {request.item_id}, self.removed)
            verify = None if degraded else self._verifier(version, spec, timeout)
            try:
                self._fill(version, picked, seen, spec, request.k, genres, verify)
            except SearchFailed:
                self._fill(version, picked, seen, spec, request.k, genres)
        response = candidates_pb2.SimilarItemsResponse(index_version=version.label)
        for item, score, source in picked:
            response.candidates.add(item_id=item, score=score, source=source)
        return response


def _check_matrix(matrix, name: str) -> None:
    n_rows, n_cols = len(matrix.entity_ids), len(matrix.names)
    if n_rows != 1:
        raise InvalidArgument(f"{name}.entity_ids", f"exactly one row (the user) expected, got {n_rows}")
    if len(matrix.values) != n_rows * n_cols:
        raise InvalidArgument(f"{name}.values", f"{len(matrix.values)} values for {n_rows} x {n_cols} features")
    if matrix.found and len(matrix.found) != n_rows:
        raise InvalidArgument(f"{name}.found", f"{len(matrix.found)} flags for {n_rows} rows")
    values = np.asarray(matrix.values, dtype=np.float64)
    if np.isinf(values).any():  # NaN means "unknown" to the user tower; infinities are errors
        raise InvalidArgument(f"{name}.values", "infinite values")


def _deadline_exceeded(exc: Exception) -> bool:
    code = getattr(exc, "code", None)
    return isinstance(exc, grpc.RpcError) and callable(code) and code() == grpc.StatusCode.DEADLINE_EXCEEDED


def _short_reason(exc: Exception) -> str:
    """A one-line reason safe to show a caller: the gRPC status of a failed Milvus call, else the message."""
    if isinstance(exc, grpc.RpcError) and callable(getattr(exc, "code", None)):  # its repr carries debug strings
        detail = " ".join(str(exc.details() or "").split())
        return f"{exc.code().name}: {detail}"[:200] if detail else exc.code().name
    text = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return " ".join(str(text).split())[:200]
