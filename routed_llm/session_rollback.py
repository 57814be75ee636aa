"""Undoing what one failed attempt of a ``RoutedAgent`` wrote: session state and artifacts.

ADK writes state straight into the session's state dict (``State.__setitem__``
does, and so does the runner when it applies an event's ``state_delta``). To
undo an attempt exactly, and pay only for what it touches, the session's
state dict is replaced once per invocation by a :class:`TrackedState`: a
``dict`` holding the same entries (a shallow copy of the key table; no value
is copied) that tells the attempt running in the current task, through a
context variable, about every key it reads or writes.

* The first write to a key records whether the key existed and its value
  (a reference). Undo puts that value back, or removes the key.
* The first read of a key records, in place, the lists, dicts, sets and
  pydantic models reachable from its value, through tuples too
  (:func:`~routed_llm.rollback.record_values`, the same record that rolls
  back a model request). Undo writes that record back into the same
  objects, latest read first, so an in-place edit is undone and every
  object keeps its identity. Other objects (numpy arrays, clients, locks,
  budgets, class instances) are shared, never copied or compared, and
  edits inside them stay.
* Writes are counted per key while attempts run. A key that someone else
  wrote after the attempt's last touch (a ``ParallelAgent`` sibling, the
  runner storing a sibling's event) is left to that writer; if the writer
  is another attempt still running, it takes over this attempt's prior
  value, so two failed attempts restore what was there before either.

No value is deep-copied, compared (unset model fields are checked for None by
identity) or hashed.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from google.adk.artifacts.base_artifact_service import ArtifactVersion, BaseArtifactService
from google.genai import types
from typing_extensions import override

from routed_llm.rollback import RequestSnapshot, record_values

__all__ = ["Attempt", "RecordingArtifacts", "TrackedState", "own_keys", "tracked"]

_MISSING: Any = object()
_attempt: ContextVar[Attempt | None] = ContextVar("routed_llm_agent_attempt", default=None)


class TrackedState(dict[str, Any]):
    """A session's state dict that reports reads and writes to the attempts running on it.

    Outside an attempt it is a plain dict with one list check per access.
    Copies (``copy``, ``deepcopy``, pickling) are plain dicts.
    """

    __slots__ = ("attempts", "versions")

    def __init__(self, values: Mapping[str, Any] | None = None) -> None:
        super().__init__(values or {})
        self.attempts: list[Attempt] = []
        # Writes per key while attempts run; cleared when the last one ends.
        self.versions: dict[str, int] = {}

    def __getitem__(self, key: str) -> Any:
        value = dict.__getitem__(self, key)
        if self.attempts:
            attempt = _attempt.get()
            while attempt is not None:
                if attempt.state is self:
                    attempt.read(key, value)
                attempt = attempt.parent
        return value

    def get(self, key: str, default: Any = None) -> Any:
        """``state[key]``, read as ``__getitem__`` reads it, or ``default``."""
        return self[key] if key in self else default  # noqa: SIM401 - dict.get would skip the read's record.

    def __setitem__(self, key: str, value: Any) -> None:
        if self.attempts:
            self._before_write(key)
        dict.__setitem__(self, key, value)

    def __delitem__(self, key: str) -> None:
        if self.attempts:
            self._before_write(key)
        dict.__delitem__(self, key)

    def pop(self, key: str, *default: Any) -> Any:
        """``dict.pop``, recorded as a write."""
        if self.attempts:
            self._before_write(key)
        return dict.pop(self, key, *default)

    def popitem(self) -> tuple[str, Any]:
        """``dict.popitem``, recorded as a write."""
        if self.attempts and self:
            self._before_write(next(reversed(self)))
        return dict.popitem(self)

    def setdefault(self, key: str, default: Any = None) -> Any:
        """``dict.setdefault``, recorded as a read or a write."""
        if key in self:
            return self[key]
        self[key] = default
        return default

    def update(self, *others: Any, **values: Any) -> None:
        """``dict.update``, each key recorded as a write."""
        if not self.attempts:
            dict.update(self, *others, **values)
            return
        for key, value in dict(*others, **values).items():
            self[key] = value

    def __ior__(self, other: Any) -> TrackedState:  # type: ignore[override,misc]
        self.update(other)
        return self

    def clear(self) -> None:
        """``dict.clear``, each key recorded as a write."""
        if self.attempts:
            for key in list(self):
                self._before_write(key)
        dict.clear(self)

    def __copy__(self) -> dict[str, Any]:
        return dict(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> dict[str, Any]:
        return copy.deepcopy(dict(self), memo)

    def __reduce__(self) -> tuple[type[dict[str, Any]], tuple[dict[str, Any]]]:
        return (dict, (dict(self),))

    def _before_write(self, key: str) -> None:
        """Counts a write of ``key``, and tells the writing attempt (and those it runs in) to record it."""
        version = self.versions.get(key, 0) + 1
        self.versions[key] = version
        attempt = _attempt.get()
        while attempt is not None:
            if attempt.state is self:
                attempt.wrote(key, version)
            attempt = attempt.parent


class _Record:
    """What one attempt knows of one key.

    Attributes:
        prior: The key's value before the attempt touched it (``_MISSING``
            if it had none).
        prior_version: The key's write count then.
        version: The write count after the attempt's last touch; another
            write since means the key is someone else's now.
        written: Whether the attempt wrote the key (else it only read it).
        containers: The record of ``prior``'s containers, if the attempt read it.
    """

    __slots__ = ("containers", "prior", "prior_version", "version", "written")

    def __init__(
        self, prior: Any, version: int, *, written: bool, containers: RequestSnapshot | None
    ) -> None:
        self.prior = prior
        self.prior_version = version
        self.version = version
        self.written = written
        self.containers = containers


class Attempt:
    """What one attempt read and wrote in a :class:`TrackedState`, to undo it.

    Args:
        state: The session's state, already a :class:`TrackedState`.

    The attempt that is current when this one is made (a ``RoutedAgent``
    running inside another's attempt) is its parent: what this attempt
    writes, its parent records too.

    Every write to the state while an attempt runs is counted per key. An
    attempt undoes a key only if nobody wrote it after the attempt's last
    touch: a write that a committed writer made since (a ``ParallelAgent``
    sibling, the runner storing its event) stands. When a write made since
    belongs to another attempt still running, that attempt takes over this
    one's prior value, so that undoing both restores what was there first,
    in either order.
    """

    __slots__ = ("_records", "parent", "state")

    def __init__(self, state: TrackedState) -> None:
        self.state = state
        self.parent = _attempt.get()
        # None once the attempt ended: a task it started may still run, and is not recorded.
        self._records: dict[str, _Record] | None = {}
        state.attempts.append(self)

    @contextmanager
    def running(self) -> Iterator[None]:
        """Makes this the attempt of the current task (and of the tasks it starts) within the block."""
        token = _attempt.set(self)
        try:
            yield
        finally:
            _attempt.reset(token)

    def read(self, key: str, value: Any) -> None:
        """Records ``value`` and its containers, the first time the attempt touches ``key`` by reading it."""
        if self._records is not None and key not in self._records:
            version = self.state.versions.get(key, 0)
            self._records[key] = _Record(value, version, written=False, containers=record_values(value))

    def wrote(self, key: str, version: int) -> None:
        """Records what ``key`` held before the attempt's first touch, and that its write is ``version``."""
        if self._records is None:
            return
        record = self._records.get(key)
        if record is None:
            record = _Record(dict.get(self.state, key, _MISSING), version - 1, written=True, containers=None)
            self._records[key] = record
        record.written = True
        record.version = version

    def undo(self) -> None:
        """Puts back every key the attempt read or wrote and nobody wrote since, and ends the attempt."""
        state, versions = self.state, self.state.versions
        others = [other for other in state.attempts if other is not self]
        # Latest first: an object reachable from two keys was recorded again, already edited, by
        # the later read, so the earliest record of it must be written back last.
        for key, record in reversed((self._records or {}).items()):
            if versions.get(key, 0) != record.version:
                for other in others:
                    other._take_over(key, record)
                continue
            if record.containers is not None:
                record.containers.restore()
            if not record.written:
                continue
            if record.prior is _MISSING:
                dict.pop(state, key, None)
            else:
                dict.__setitem__(state, key, record.prior)
            versions[key] = record.prior_version
            for other in others:
                other._rewind(key, record)
        self.end()

    def _take_over(self, key: str, undone: _Record) -> None:
        """Takes ``undone``'s prior value as its own, if this attempt wrote over that attempt's write."""
        record = (self._records or {}).get(key)
        if record is not None and record.written and record.prior_version == undone.version:
            record.prior, record.prior_version = undone.prior, undone.prior_version

    def _rewind(self, key: str, undone: _Record) -> None:
        """After ``undone``'s write was taken back: a touch that ended on it now ends where it began."""
        record = (self._records or {}).get(key)
        if record is not None and record.version == undone.version:
            record.version = undone.prior_version

    def end(self) -> None:
        """Stops recording: the attempt committed, or was undone."""
        self._records = None
        if self in self.state.attempts:
            self.state.attempts.remove(self)
        if not self.state.attempts:
            self.state.versions.clear()


class RecordingArtifacts(BaseArtifactService):
    """An artifact service that records what one attempt saves, to delete it if the attempt fails.

    Args:
        service: The invocation's artifact service; every call goes to it.
    """

    def __init__(self, service: BaseArtifactService) -> None:
        self._service = service
        self._recording = True
        # Per (user_id, session_id, filename): the first version the attempt saved.
        self.saved: dict[tuple[str, str | None, str], int] = {}
        # Per artifact the attempt deleted: its versions from before the attempt, oldest first.
        self.deleted: dict[tuple[str, str | None, str], list[tuple[types.Part, dict[str, Any]]]] = {}
        self._app_name = ""

    def stop(self) -> None:
        """Stops recording: the attempt committed."""
        self._recording = False
        self.saved = {}
        self.deleted = {}

    async def undo(self) -> None:
        """Deletes what the attempt created; supersedes a version it added with the one before it.

        ADK's artifact services delete an artifact with every version, and
        cannot delete one version: a version added to an existing artifact
        stays loadable by its number, and the version before it is saved
        again on top, with its custom metadata, so loading the latest gives
        what was there before.
        An artifact the attempt deleted is saved again, each version it had
        before the attempt in order, with its custom metadata.
        """
        saved, self.saved = self.saved, {}
        deleted, self.deleted = self.deleted, {}
        self._recording = False
        service, app_name = self._service, self._app_name
        for (user_id, session_id, filename), versions in deleted.items():
            saved.pop((user_id, session_id, filename), None)
            await service.delete_artifact(
                app_name=app_name, user_id=user_id, session_id=session_id, filename=filename
            )
            for part, metadata in versions:
                await service.save_artifact(
                    app_name=app_name,
                    user_id=user_id,
                    session_id=session_id,
                    filename=filename,
                    artifact=part,
                    custom_metadata=metadata or None,
                )
        for (user_id, session_id, filename), version in saved.items():
            if version == 0:
                await service.delete_artifact(
                    app_name=app_name, user_id=user_id, session_id=session_id, filename=filename
                )
                continue
            before = await service.load_artifact(
                app_name=app_name,
                user_id=user_id,
                session_id=session_id,
                filename=filename,
                version=version - 1,
            )
            if before is not None:
                described = await service.get_artifact_version(
                    app_name=app_name,
                    user_id=user_id,
                    session_id=session_id,
                    filename=filename,
                    version=version - 1,
                )
                await service.save_artifact(
                    app_name=app_name,
                    user_id=user_id,
                    session_id=session_id,
                    filename=filename,
                    artifact=before,
                    custom_metadata=(described.custom_metadata or None) if described is not None else None,
                )

    @override
    async def save_artifact(
        self,
        *,
        app_name: str,
        user_id: str,
        filename: str,
        artifact: types.Part | dict[str, Any],
        session_id: str | None = None,
        custom_metadata: dict[str, Any] | None = None,
    ) -> int:
        version = await self._service.save_artifact(
            app_name=app_name,
            user_id=user_id,
            filename=filename,
            artifact=artifact,
            session_id=session_id,
            custom_metadata=custom_metadata,
        )
        if self._recording:
            self._app_name = app_name
            self.saved.setdefault((user_id, session_id, filename), version)
        return version

    @override
    async def load_artifact(
        self,
        *,
        app_name: str,
        user_id: str,
        filename: str,
        session_id: str | None = None,
        version: int | None = None,
    ) -> types.Part | None:
        return await self._service.load_artifact(
            app_name=app_name, user_id=user_id, filename=filename, session_id=session_id, version=version
        )

    @override
    async def list_artifact_keys(
        self, *, app_name: str, user_id: str, session_id: str | None = None
    ) -> list[str]:
        return await self._service.list_artifact_keys(
            app_name=app_name, user_id=user_id, session_id=session_id
        )

    @override
    async def delete_artifact(
        self, *, app_name: str, user_id: str, filename: str, session_id: str | None = None
    ) -> None:
        where = (user_id, session_id, filename)
        if self._recording and where not in self.deleted:
            self._app_name = app_name
            # Versions the attempt itself saved are not put back.
            first_saved = self.saved.pop(where, None)
            self.deleted[where] = [
                (part, metadata)
                for version, part, metadata in await self._versions(app_name, user_id, filename, session_id)
                if first_saved is None or version < first_saved
            ]
        await self._service.delete_artifact(
            app_name=app_name, user_id=user_id, filename=filename, session_id=session_id
        )

    async def _versions(
        self, app_name: str, user_id: str, filename: str, session_id: str | None
    ) -> list[tuple[int, types.Part, dict[str, Any]]]:
        """Every version of an artifact: its number, content and custom metadata, oldest first."""
        service = self._service
        listed = await service.list_artifact_versions(
            app_name=app_name, user_id=user_id, session_id=session_id, filename=filename
        )
        versions = []
        for version in sorted(listed, key=lambda listed_version: listed_version.version):
            part = await service.load_artifact(
                app_name=app_name,
                user_id=user_id,
                session_id=session_id,
                filename=filename,
                version=version.version,
            )
            if part is not None:
                versions.append((version.version, part, dict(version.custom_metadata)))
        return versions

    @override
    async def list_versions(
        self, *, app_name: str, user_id: str, filename: str, session_id: str | None = None
    ) -> list[int]:
        return await self._service.list_versions(
            app_name=app_name, user_id=user_id, filename=filename, session_id=session_id
        )

    @override
    async def list_artifact_versions(
        self, *, app_name: str, user_id: str, filename: str, session_id: str | None = None
    ) -> list[ArtifactVersion]:
        return await self._service.list_artifact_versions(
            app_name=app_name, user_id=user_id, filename=filename, session_id=session_id
        )

    @override
    async def get_artifact_version(
        self,
        *,
        app_name: str,
        user_id: str,
        filename: str,
        session_id: str | None = None,
        version: int | None = None,
    ) -> ArtifactVersion | None:
        return await self._service.get_artifact_version(
            app_name=app_name, user_id=user_id, filename=filename, session_id=session_id, version=version
        )


def tracked(state: dict[str, Any]) -> TrackedState:
    """``state`` if it is tracked already, else a :class:`TrackedState` holding its entries."""
    return state if isinstance(state, TrackedState) else TrackedState(state)


def own_keys(keys: Iterable[str], names: set[str]) -> list[str]:
    """The agent-state keys (an agent name, or a node path ending in ``name@run``) of the agents ``names``."""
    return [key for key in keys if key.split("/")[-1].rsplit("@", 1)[0] in names]
