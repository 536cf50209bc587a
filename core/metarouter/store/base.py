"""The preference-store interface: durable per-user routing state shared by every adapter."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from metarouter.novelty import RECENT_TRAFFIC
from metarouter.store.records import (
    ComparisonRecord,
    DecisionRecord,
    RecentQuery,
    validate_user_id,
)

__all__ = ["PreferenceStore"]

_S = TypeVar("_S", bound="PreferenceStore")


class PreferenceStore(ABC):
    """Where decisions, comparisons and cached preferences live.

    Implementations must make every write transactional (a failed write changes nothing),
    keep users isolated (a comparison may only reference the same user's decisions), and bump
    a per-user version on every change to that user's comparisons, so a cached preference of an
    older version is recomputed instead of served.
    """

    @abstractmethod
    def record_decision(self, record: DecisionRecord) -> None:
        """Store a routing decision (its id must be new)."""

    @abstractmethod
    def get_decision(self, decision_id: str) -> DecisionRecord:
        """The decision with this id; :class:`~metarouter.errors.FeedbackError` if unknown."""

    @abstractmethod
    def find_decision(self, run_id: str) -> DecisionRecord | None:
        """The decision recorded with this framework run id, if any."""

    @abstractmethod
    def complete_decision(
        self,
        decision_id: str,
        *,
        chosen: str,
        cost_usd: float | None,
        fallbacks: tuple[str, ...] = (),
    ) -> None:
        """Record which model finally answered, what it cost, and which models failed first."""

    @abstractmethod
    def record_comparison(self, record: ComparisonRecord) -> int:
        """Store a comparison and return the user's new version.

        Raises:
            FeedbackError: A referenced decision is unknown or belongs to another user.
        """

    @abstractmethod
    def comparisons(self, user_id: str) -> list[ComparisonRecord]:
        """All comparisons of a user, oldest first."""

    def recent_queries(self, user_id: str, limit: int = RECENT_TRAFFIC) -> list[RecentQuery]:
        """The queries of the user's last ``limit`` routed decisions, newest first.

        Each is its embedding and estimated prompt tokens, the model that answered and the
        billed cost when the provider reported usage. The router reads the user's traffic from
        them: how unlike its training data it is (:meth:`metarouter.router.MetaRouter.adapt`),
        what a comparison is worth for routing it
        (:meth:`metarouter.service.RoutingService.suggest_comparison`) and, for a user with no
        comparisons yet, what their calls really cost. A store that keeps no decisions returns
        none (the default).
        """
        validate_user_id(user_id)
        return []

    def recent_embeddings(self, user_id: str, limit: int = RECENT_TRAFFIC) -> list[np.ndarray]:
        """Query embeddings of the user's last ``limit`` routed decisions, newest first.

        :meth:`recent_queries` without the token counts.
        """
        return [q.embedding for q in self.recent_queries(user_id, limit)]

    @abstractmethod
    def user_version(self, user_id: str) -> int:
        """The user's feedback version (0 for a user with no comparisons)."""

    @abstractmethod
    def cached_preference(self, user_id: str, router_id: str) -> tuple[int, dict[str, Any]] | None:
        """The cached preference state of ``user_id`` for this router, with its version."""

    @abstractmethod
    def cache_preference(
        self, user_id: str, router_id: str, version: int, state: dict[str, Any]
    ) -> None:
        """Cache a preference computed at ``version`` (ignored if the user has moved on)."""

    @abstractmethod
    def export_user(self, user_id: str) -> Iterator[dict[str, Any]]:
        """Every row about a user as JSON-ready dicts (decisions, comparisons, cache)."""

    @abstractmethod
    def delete_user(self, user_id: str) -> int:
        """Delete everything about a user (right to be forgotten); returns rows deleted."""

    @abstractmethod
    def users(self) -> list[str]:
        """Ids of all users with stored decisions or comparisons."""

    # -- optional, with defaults built on the methods above -------------------------------------
    def iter_records(
        self, *, skipped: list[str] | None = None
    ) -> Iterator[DecisionRecord | ComparisonRecord]:
        """Every stored decision, then every comparison, oldest first (for dataset export).

        Args:
            skipped: Collects a message per stored row that could not be decoded (skipped).

        Raises:
            NotImplementedError: The store cannot list all of its rows.
        """
        raise NotImplementedError(
            f"{type(self).__name__} cannot list all stored records; implement iter_records() "
            "to export a dataset."
        )

    def export_comparisons(
        self, path: str | os.PathLike[str], *, include_metadata: bool = False
    ) -> dict[str, int]:
        """Write every decision and comparison as a ``metarouter-feedback`` JSONL dataset.

        The format is described in :mod:`metarouter.store.export` and docs/store.md; read it
        back with :func:`~metarouter.store.export.load_comparison_export`.

        Args:
            path: Output file (replaced atomically; never one of the store's own files).
            include_metadata: Also write decisions' run ids and free-form metadata.

        Returns:
            Rows written: ``{"decisions": ..., "comparisons": ...}``.

        Raises:
            ConfigError: ``path`` is one of the store's files, or a folder.
        """
        from metarouter.store.export import write_dataset
        from metarouter.store.maintenance import check_output_path

        target = check_output_path(path, self.files(), force=True)
        return write_dataset(target, self.iter_records(), include_metadata=include_metadata)

    def export_user_jsonl(self, user_id: str, path: str | os.PathLike[str]) -> int:
        """Write everything stored about a user to a JSONL file (data-access requests).

        Returns:
            The number of rows written (header and footer lines not counted).
        """
        from metarouter.store.export import write_user_export
        from metarouter.store.maintenance import check_output_path

        uid = validate_user_id(user_id)
        target = check_output_path(path, self.files(), force=True)
        return write_user_export(target, uid, self.export_user(uid))

    def files(self) -> list[Path]:
        """The files the store lives in (an export or backup may never be written over them)."""
        return []

    def stats(self) -> dict[str, Any]:
        """Row counts and backend details (for ``metarouter store stats``)."""
        return {"backend": type(self).__name__, "users": len(self.users())}

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    def __enter__(self: _S) -> _S:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
