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

A pydantic model is recorded compactly: only the values of the fields that
are set (``model_fields_set``) and of the fields whose default is not None
(a ``default_factory`` list, say, which can be filled in place while unset),
and which fields were set. Every other field holds None, and restoring
writes None back. A node that breaks that rule (a value written past
pydantic with ``object.__setattr__``, a key in ``__dict__`` that is not a
field) is recorded whole instead, so the record stays exact for any node.

``tools_dict`` is shared, never recorded: it holds live tool objects (MCP
sessions, locks) that models read but do not edit. Objects that are neither
pydantic models, lists nor dicts (callables, clients, enums, bytes, tuples)
are kept by reference and not descended into. A session-state value
(:func:`record_values`) also has its sets and dict and list subclasses
recorded, and its tuples walked into.
"""

from __future__ import annotations

import logging
from operator import is_not, itemgetter
from typing import TYPE_CHECKING, Any

from google.genai import types
from pydantic import BaseModel

if TYPE_CHECKING:
    from google.adk.models.llm_request import LlmRequest

__all__ = ["RequestSnapshot", "record_values"]

logger = logging.getLogger(__name__)

_LEAF_TYPES = frozenset({str, int, float, bool, bytes, type(None)})
# Distinct combinations of set fields remembered per model class; past this, a
# layout is built for the node at hand and not kept.
_MAX_LAYOUTS_PER_TYPE = 256


class _Layout:
    """How to record and restore a model of one class with one set of set fields.

    ``names`` are the fields recorded: the set ones, and every field whose
    default is not None (a ``default_factory`` list, say, which can be edited
    in place while unset). Every other field must hold None, which
    ``unset(state) == nones`` checks (identity first: only an object whose
    ``__eq__`` claims to equal None could pass in its place) and
    :meth:`restore` writes back.

    Attributes:
        fields: The set fields, as ``__pydantic_fields_set__`` holds them.
        names: The fields whose values are recorded, in declaration order.
        get: Reads the recorded values from ``__dict__``: None when there
            are none, the bare value for one, a tuple for several.
        many: Whether there are several recorded values (a tuple).
        unset: Reads the other fields, the same way (None when there are none).
        nones: What ``unset`` reads when every other field holds None.
        size: How many fields the class has.
    """

    __slots__ = ("_template", "fields", "get", "many", "names", "nones", "size", "unset")

    def __init__(self, model_type: type[BaseModel], fields_set: frozenset[str]) -> None:
        model_fields = model_type.model_fields
        self.fields = fields_set
        self.names = tuple(
            name for name, info in model_fields.items() if name in fields_set or info.default is not None
        )
        unset = tuple(name for name in model_fields if name not in self.names)
        self.size = len(model_fields)
        # Every field in declaration order, the order pydantic fills ``__dict__``.
        self._template = dict.fromkeys(model_fields)
        self.get: Any = itemgetter(*self.names) if self.names else None
        self.many = len(self.names) > 1
        self.unset: Any = itemgetter(*unset) if unset else None
        self.nones: Any = None if len(unset) == 1 else (None,) * len(unset)

    def values(self, recorded: Any) -> tuple[Any, ...]:
        """The recorded values as a tuple, whatever their count."""
        if self.many:
            return tuple(recorded)
        return (recorded,) if self.names else ()

    def restore(self, model: BaseModel, recorded: Any) -> None:
        """Writes the recorded values back into ``model``, and None around them."""
        state = model.__dict__
        state.clear()
        state.update(self._template)
        state.update(zip(self.names, self.values(recorded), strict=True))
        object.__setattr__(model, "__pydantic_fields_set__", set(self.fields))


class _Whole:
    """Records a model whose state does not fit a layout: its whole ``__dict__``."""

    __slots__ = ()

    @staticmethod
    def restore(model: BaseModel, recorded: tuple[dict[str, Any], frozenset[str]]) -> None:
        state, fields_set = recorded
        current = model.__dict__
        current.clear()
        current.update(state)
        object.__setattr__(model, "__pydantic_fields_set__", set(fields_set))


_WHOLE = _Whole()
# Per model class, its layouts by set fields; None for a class that is not a
# pydantic model (kept by reference).
_LAYOUTS: dict[type, dict[frozenset[str], _Layout] | None] = {}
_NOT_SEEN: Any = object()


def _layouts_of(node_type: type) -> dict[frozenset[str], _Layout] | None:
    """The layouts of ``node_type``: None if it is not a pydantic model."""
    if node_type not in _LAYOUTS:
        is_model = isinstance(node_type, type) and issubclass(node_type, BaseModel)
        _LAYOUTS[node_type] = {} if is_model else None
    return _LAYOUTS[node_type]


def _layout(
    node_type: type[BaseModel], layouts: dict[frozenset[str], _Layout], fields_set: frozenset[str]
) -> _Layout:
    """Builds the layout of ``node_type`` for ``fields_set``, and keeps it if there is room."""
    layout = _Layout(node_type, fields_set)
    if len(layouts) < _MAX_LAYOUTS_PER_TYPE:
        layouts[fields_set] = layout
    return layout


# The fast path's shape: a Content with parts and a role, a Part with text alone.
_CONTENT_FIELDS = frozenset({"parts", "role"})
_TEXT_FIELDS = frozenset({"text"})
_PART_FIELD_COUNT = len(types.Part.model_fields)
_PART_UNSET = itemgetter(*(name for name in types.Part.model_fields if name != "text"))
_PART_NONES = (None,) * (_PART_FIELD_COUNT - 1)
_PART_TEMPLATE = dict.fromkeys(types.Part.model_fields)


class RequestSnapshot:
    """The restorable state of one ``LlmRequest`` and everything it holds.

    Take one with :meth:`take` before handing the request to a model, and call
    :meth:`restore` to undo whatever that model did to it. A snapshot can be
    restored any number of times.
    """

    __slots__ = ("_contents", "_dicts", "_lists", "_models", "_others", "_texts")

    def __init__(self) -> None:
        # Flat, to keep a long request's record small: model, layout and
        # values for each model; content, parts and role for each content on
        # the fast path; part and text for each text part; the list and its
        # items (a tuple) for each list.
        self._models: list[Any] = []
        self._contents: list[Any] = []
        self._texts: list[Any] = []
        self._lists: list[Any] = []
        self._dicts: list[tuple[dict[Any, Any], dict[Any, Any]]] = []
        # Sets, and subclasses of dict and list, with their entries (session-state values only).
        self._others: list[tuple[Any, Any]] = []

    @classmethod
    def take(cls, llm_request: LlmRequest) -> RequestSnapshot:
        """Records the state of ``llm_request`` and of every node it reaches.

        Args:
            llm_request: The request as the caller passed it in.

        Returns:
            A snapshot that :meth:`restore` rolls the request back to.
        """
        snapshot = cls()
        state = llm_request.__dict__
        # Tools are shared, never recorded; contents take the fast path.
        seen = {id(state.get("tools_dict"))}
        contents = state.get("contents")
        rest: list[Any] = [llm_request]
        if type(contents) is list:
            seen.add(id(contents))
            snapshot._lists += (contents, tuple(contents))
            rest += snapshot._record_contents(contents)
        snapshot._record_graph(rest, seen)
        return snapshot

    def _record_contents(self, contents: list[Any]) -> list[Any]:
        """Records a list of ``Content`` objects on a fast path.

        Contents make up most of a long request and almost always have the
        same shape: a ``Content`` with a role and a list of ``Part`` objects
        that hold text and nothing else. That shape is recorded here without
        the general walk's bookkeeping. A ``Part`` or ``Content`` may appear
        twice in a request; recording it twice is harmless, since both
        records hold the same state.

        Returns:
            The nodes off that shape, for the general walk.
        """
        recorded_contents, texts, lists = self._contents, self._texts, self._lists
        content_type, part_type = types.Content, types.Part
        content_fields, text_fields = _CONTENT_FIELDS, _TEXT_FIELDS
        part_field_count, part_unset, part_nones = _PART_FIELD_COUNT, _PART_UNSET, _PART_NONES
        rest: list[Any] = []
        for content in contents:
            if type(content) is not content_type or content.__pydantic_fields_set__ != content_fields:
                rest.append(content)
                continue
            state = content.__dict__
            parts, role = state.get("parts"), state.get("role")
            if type(parts) is not list or type(role) not in _LEAF_TYPES or len(state) != 2:
                rest.append(content)
                continue
            recorded_contents += (content, parts, role)
            lists += (parts, tuple(parts))
            for part in parts:
                if type(part) is not part_type or part.__pydantic_fields_set__ != text_fields:
                    rest.append(part)
                    continue
                part_state = part.__dict__
                text = part_state.get("text")
                if (
                    type(text) is not str
                    or len(part_state) != part_field_count
                    or part_unset(part_state) != part_nones
                ):
                    rest.append(part)
                    continue
                texts += (part, text)
        return rest

    def _record_graph(self, stack: list[Any], seen: set[int], *, by_identity: bool = False) -> None:
        """Records every mutable node reachable from ``stack``, depth first.

        Each node is recorded once, however many paths lead to it, which also
        makes the walk safe on graphs with cycles. Nodes whose ids are in
        ``seen`` are not recorded. With ``by_identity``, a model's unset
        fields are checked to hold None by identity alone, never calling a
        value's ``__eq__`` (a numpy array's would raise).
        """
        leaf = _LEAF_TYPES
        models, lists, dicts = self._models, self._lists, self._dicts
        while stack:
            node = stack.pop()
            node_type = type(node)
            if node_type in leaf or id(node) in seen:
                continue
            seen.add(id(node))
            if node_type is list:
                lists += (node, tuple(node))
                stack += node
                continue
            if node_type is dict:
                dicts.append((node, node.copy()))
                stack += node.values()
                continue
            layouts = _LAYOUTS.get(node_type, _NOT_SEEN)
            if layouts is _NOT_SEEN:
                layouts = _layouts_of(node_type)
            if layouts is None:
                if by_identity:
                    self._record_builtin(node, stack)
                continue  # Not a pydantic model: kept by reference.
            state = node.__dict__
            fields_set = frozenset(node.__pydantic_fields_set__)
            layout = layouts.get(fields_set) or _layout(node_type, layouts, fields_set)
            if len(state) == layout.size and (
                layout.unset is None
                or (
                    _only_nones(layout.unset(state), layout.nones)
                    if by_identity
                    else layout.unset(state) == layout.nones
                )
            ):
                values: Any = None if layout.get is None else layout.get(state)
                models += (node, layout, values)
                if layout.many:
                    stack += values
                else:
                    stack.append(values)
            else:
                models += (node, _WHOLE, (state.copy(), fields_set))
                stack += state.values()
            if node.__pydantic_extra__:
                stack.append(node.__pydantic_extra__)
            if node.__pydantic_private__:
                stack.append(node.__pydantic_private__)

    def _record_builtin(self, node: Any, stack: list[Any]) -> None:
        """Records a set or a dict or list subclass, and walks into a tuple, a session-state value's.

        A set's items are hashable, so they are not walked into. Anything
        else is kept by reference.
        """
        if isinstance(node, tuple):
            stack += node
        elif isinstance(node, (set, list)):
            self._others.append((node, tuple(node)))
            if isinstance(node, list):
                stack += node
        elif isinstance(node, dict):
            self._others.append((node, tuple(node.items())))
            stack += node.values()

    @property
    def empty(self) -> bool:
        """Whether nothing was recorded: there is nothing to restore."""
        return not (
            self._models or self._contents or self._texts or self._lists or self._dicts or self._others
        )

    def restore(self) -> None:
        """Writes the recorded state back into the recorded objects, in place."""
        models = self._models
        for index in range(0, len(models), 3):
            models[index + 1].restore(models[index], models[index + 2])
        contents = self._contents
        for index in range(0, len(contents), 3):
            content = contents[index]
            state = content.__dict__
            state.clear()
            state.update(parts=contents[index + 1], role=contents[index + 2])
            object.__setattr__(content, "__pydantic_fields_set__", set(_CONTENT_FIELDS))
        texts = self._texts
        for index in range(0, len(texts), 2):
            part = texts[index]
            state = part.__dict__
            state.clear()
            state.update(_PART_TEMPLATE, text=texts[index + 1])
            object.__setattr__(part, "__pydantic_fields_set__", set(_TEXT_FIELDS))
        lists = self._lists
        for index in range(0, len(lists), 2):
            lists[index][:] = lists[index + 1]
        for entries, saved_entries in self._dicts:
            entries.clear()
            entries.update(saved_entries)
        for node, saved in self._others:
            # Only if edited (by identity, so no item is compared or hashed again, and a read-only
            # subclass is never written); through the object's own methods, so an OrderedDict
            # keeps its order.
            if not _edited(node, saved):
                continue
            if isinstance(node, list):
                node[:] = saved
            else:
                node.clear()
                node.update(saved)


def record_values(value: Any) -> RequestSnapshot | None:
    """Records, in place, the lists, dicts and pydantic models reachable from ``value``.

    A ``RoutedAgent`` records each session-state value an attempt reads this
    way, to undo in-place edits of it. The record holds each container's
    shallow state (its entries, by reference); no value is deep-copied or
    compared, and restoring writes the entries back into the same objects.

    Sets, the items of tuples, and subclasses of dict and list
    (``defaultdict``, ``OrderedDict``) are recorded too; other objects are
    kept by reference and not walked into.

    Returns:
        A snapshot to :meth:`~RequestSnapshot.restore`, or None when
        ``value`` holds nothing to record, or recording it raised (logged
        at debug level).
    """
    if type(value) in _LEAF_TYPES:
        return None
    snapshot = RequestSnapshot()
    try:
        snapshot._record_graph([value], set(), by_identity=True)
    except Exception:  # A read must not fail for the rollback's sake; the value is then shared as it is.
        logger.debug(
            "Could not record a %s read from the session state.", type(value).__name__, exc_info=True
        )
        return None
    return None if snapshot.empty else snapshot


def _edited(node: Any, saved: tuple[Any, ...]) -> bool:
    """Whether a set, list or dict differs from its recorded items (a dict's pairs), by identity."""
    if len(node) != len(saved):
        return True
    if isinstance(node, dict):
        return any(
            key is not kept_key or value is not kept_value
            for (key, value), (kept_key, kept_value) in zip(node.items(), saved, strict=True)
        )
    return any(map(is_not, node, saved))


def _only_nones(values: Any, nones: Any) -> bool:
    """Whether ``values`` (a layout's ``unset`` reading) is None, or all None, by identity."""
    return values is None if nones is None else not any(map(is_not, values, nones))
