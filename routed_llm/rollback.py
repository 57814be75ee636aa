"""Exact, cheap rollback of an ``LlmRequest`` between routing attempts.

Models edit the request they are given in place: Gemini appends a user turn,
LiteLLM rewrites contents, plugins add labels. When a model fails and another
takes over, the next model must see the request exactly as the caller built
it, not as the failed model left it.

ADK's ``FallbackModel`` deep-copies contents and config before each attempt.
Deep copy is exact but slow (about 1 ms for 50 contents). A
:class:`RequestSnapshot` instead records the *shallow* state of every mutable
node reachable from the request (each pydantic model's field values, each
list's items, each dict's entries) without copying the nodes themselves.
Restoring writes that shallow state back into the very same objects, so the
whole graph is returned to its original state, object identity included, at a
fraction of the cost.

``tools_dict`` is shared, never recorded: it holds live tool objects (MCP
sessions, locks) that models read but do not edit. Objects that are neither
pydantic models, lists nor dicts (callables, clients, enums, bytes) are kept
by reference and not descended into.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from google.genai import types
from pydantic import BaseModel

if TYPE_CHECKING:
    from google.adk.models.llm_request import LlmRequest

__all__ = ["RequestSnapshot"]

_LEAF_TYPES = frozenset({str, int, float, bool, bytes, type(None)})
_SHARED_FIELDS = frozenset({"tools_dict"})
# Part fields whose values are leaves (text, flags, bytes): nothing to descend.
_PART_LEAF_FIELDS = frozenset({"text", "thought", "thought_signature"})


def _fields_to_scan(node_type: type) -> frozenset[str] | None:
    """Which fields of ``node_type`` may hold a mutable value while unset.

    A field the caller never set holds its default. Only a default that is a
    container (a ``default_factory`` list, say) can be edited in place, so
    those fields are scanned always and every other field only when set.

    Returns:
        The field names, or None when ``node_type`` is not a pydantic model
        (such objects are kept by reference and not descended into).
    """
    scan: frozenset[str] | None = None
    if isinstance(node_type, type) and issubclass(node_type, BaseModel):
        scan = frozenset(
            name
            for name, field in node_type.model_fields.items()
            if field.default_factory is not None or type(field.default) not in _LEAF_TYPES
        )
    _SCAN_CACHE[node_type] = scan
    return scan


_SCAN_CACHE: dict[type, frozenset[str] | None] = {}
_UNKNOWN = frozenset({"<unknown>"})


class RequestSnapshot:
    """The restorable state of one ``LlmRequest`` and everything it holds.

    Take one with :meth:`take` before handing the request to a model, and call
    :meth:`restore` to undo whatever that model did to it. A snapshot can be
    restored any number of times.
    """

    __slots__ = ("_dicts", "_lists", "_models")

    def __init__(
        self,
        models: list[tuple[BaseModel, dict[str, Any], set[str]]],
        lists: list[tuple[list[Any], list[Any]]],
        dicts: list[tuple[dict[Any, Any], dict[Any, Any]]],
    ) -> None:
        self._models = models
        self._lists = lists
        self._dicts = dicts

    @classmethod
    def take(cls, llm_request: LlmRequest) -> RequestSnapshot:
        """Records the state of ``llm_request`` and of every node it reaches.

        Args:
            llm_request: The request as the caller passed it in.

        Returns:
            A snapshot that :meth:`restore` rolls the request back to.
        """
        snapshot = cls([], [], [])
        top = llm_request.__dict__
        snapshot._models.append((llm_request, top.copy(), set(llm_request.__pydantic_fields_set__)))
        pending: list[Any] = [
            value for name, value in top.items() if name not in _SHARED_FIELDS and name != "contents"
        ]
        if llm_request.__pydantic_private__:
            pending.append(llm_request.__pydantic_private__)
        contents = top.get("contents")
        if type(contents) is list:
            snapshot._lists.append((contents, contents.copy()))
            pending += snapshot._record_contents(contents)
        else:
            pending.append(contents)
        snapshot._record_graph(pending)
        return snapshot

    def _record_contents(self, contents: list[Any]) -> list[Any]:
        """Records a list of ``Content`` objects on a fast path.

        Contents make up most of a long request and almost always have the
        same shape: ``Content`` holding a list of text ``Part`` objects. That
        shape is recorded here without the general walk's bookkeeping. A
        ``Part`` or ``Content`` may appear twice in a request; recording it
        twice is harmless, since both records hold the same state.

        Returns:
            The nodes found that need the general walk (anything off the
            common shape, and the non-text fields of parts).
        """
        models = self._models
        lists = self._lists
        content_type, part_type, leaf_fields = types.Content, types.Part, _PART_LEAF_FIELDS
        rest: list[Any] = []
        for content in contents:
            if type(content) is not content_type:
                rest.append(content)
                continue
            state = content.__dict__
            models.append((content, state.copy(), set(content.__pydantic_fields_set__)))
            parts = state["parts"]
            if type(parts) is not list:
                rest.append(parts)
                continue
            lists.append((parts, parts.copy()))
            for part in parts:
                if type(part) is not part_type:
                    rest.append(part)
                    continue
                part_state = part.__dict__
                fields_set = part.__pydantic_fields_set__
                models.append((part, part_state.copy(), set(fields_set)))
                if not fields_set <= leaf_fields:
                    rest += map(part_state.get, fields_set)
        return rest

    def _record_graph(self, stack: list[Any]) -> None:
        """Records every mutable node reachable from ``stack``, depth first.

        Each node is recorded once, however many paths lead to it, which also
        makes the walk safe on graphs with cycles.
        """
        leaf = _LEAF_TYPES
        scan_cache = _SCAN_CACHE
        seen: set[int] = set()
        while stack:
            node = stack.pop()
            node_type = type(node)
            if node_type in leaf or id(node) in seen:
                continue
            seen.add(id(node))
            if node_type is list:
                self._lists.append((node, node.copy()))
                stack += node
            elif node_type is dict:
                self._dicts.append((node, node.copy()))
                stack += node.values()
            else:
                scan = scan_cache.get(node_type, _UNKNOWN)
                if scan is _UNKNOWN:
                    scan = _fields_to_scan(node_type)
                if scan is None:
                    continue  # Not a pydantic model: kept by reference.
                state = node.__dict__
                fields_set = node.__pydantic_fields_set__
                self._models.append((node, state.copy(), set(fields_set)))
                stack += map(state.get, fields_set)
                if scan:
                    stack += map(state.get, scan)
                if node.__pydantic_extra__:
                    stack.append(node.__pydantic_extra__)
                if node.__pydantic_private__:
                    stack.append(node.__pydantic_private__)

    def restore(self) -> None:
        """Writes the recorded state back into the recorded objects, in place."""
        for model, state, fields_set in self._models:
            current = model.__dict__
            current.clear()
            current.update(state)
            object.__setattr__(model, "__pydantic_fields_set__", set(fields_set))
        for items, saved_items in self._lists:
            items[:] = saved_items
        for entries, saved_entries in self._dicts:
            entries.clear()
            entries.update(saved_entries)
