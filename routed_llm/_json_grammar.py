"""Structured output on the device: a request's response schema, as a llama.cpp JSON-schema grammar.

:func:`output_schema` reads the JSON Schema a request asks its output to
follow (``response_schema`` in any shape genai accepts, or
``response_json_schema``); :func:`grammar_text` turns it into the GBNF
grammar llama.cpp samples under, refusing with :class:`UnsupportedSchema`
any keyword the grammar cannot enforce, so the output is always valid for
the schema.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Iterator, Mapping
from typing import Any

import pydantic
from google.genai import types

__all__ = ["UnsupportedSchema", "grammar_text", "output_schema"]

JSON_MIME_TYPE = "application/json"

# Keywords that say nothing about which values are valid: skipped by the check.
_ANNOTATIONS = frozenset(
    {"title", "description", "default", "examples", "$schema", "$id", "$comment", "deprecated"}
    | {"readOnly", "writeOnly", "$defs", "definitions", "$anchor"}
)
# Keywords that constrain values and that llama.cpp's converter would silently ignore.
_UNENFORCEABLE = frozenset(
    {"not", "if", "then", "else", "allOf", "oneOf", "dependentSchemas", "dependentRequired"}
    | {"patternProperties", "propertyNames", "unevaluatedProperties", "unevaluatedItems", "contains"}
    | {"minContains", "maxContains", "minProperties", "maxProperties", "multipleOf"}
    | {"exclusiveMinimum", "exclusiveMaximum", "$dynamicRef", "$recursiveRef"}
)
_STRING_FORMATS = frozenset(
    {"date", "time", "date-time", "uuid", "uuid1", "uuid2", "uuid3", "uuid4", "uuid5"}
)
_TYPES = frozenset({"object", "array", "string", "number", "integer", "boolean", "null"})
_MAX_INTEGER_RANGE = 256  # Integer ranges up to this many values are spelled out as alternatives.
# genai's own schema spelling, which response_schema may use for a dict.
_GENAI_KEYS = frozenset(
    {"any_of", "min_items", "max_items", "min_length", "max_length", "property_ordering"}
    | {"additional_properties", "min_properties", "max_properties", "nullable"}
)


class UnsupportedSchema(ValueError):
    """A response schema holds a construct llama.cpp's grammar cannot enforce.

    Attributes:
        construct: The keyword (or keyword and value) that cannot be enforced.
        path: Where in the schema it is, as a JSON pointer ("" for the root).
    """

    def __init__(self, construct: str, path: str, advice: str) -> None:
        self.construct = construct
        self.path = path
        super().__init__(
            f"The response schema uses {construct} at {path or 'the root'} ('#{path}'), which "
            f"llama.cpp's JSON-schema grammar cannot enforce. {advice}"
        )


def output_schema(config: types.GenerateContentConfig | None) -> dict[str, Any] | None:
    """The JSON Schema the request's output must follow; ``{}`` for any JSON; None for free text.

    Args:
        config: The request's config.

    Returns:
        The schema, a JSON Schema dict (``response_schema`` converted from
        a pydantic model, a type, a genai ``Schema`` or a dict), ``{}`` when
        the request asks for JSON with no schema, None when it asks for text.

    Raises:
        ValueError: The request sets a schema without asking for JSON, sets
            both schema fields, or its schema cannot be read.
    """
    if config is None:
        return None
    given = [value for value in (config.response_schema, config.response_json_schema) if value is not None]
    mime_type = config.response_mime_type
    if len(given) == 2:
        raise ValueError("The request sets both response_schema and response_json_schema; set one of them.")
    if mime_type != JSON_MIME_TYPE:
        if given:
            raise ValueError(
                f"The request sets a response schema with response_mime_type={mime_type!r}; a schema "
                f"takes response_mime_type={JSON_MIME_TYPE!r} (LlmRequest.set_output_schema sets both)."
            )
        return None
    if not given:
        return {}
    return _json_schema(given[0])


def grammar_text(schema: Mapping[str, Any]) -> str:
    """The GBNF grammar under which llama.cpp can only generate JSON valid for ``schema``.

    Args:
        schema: A JSON Schema, as :func:`output_schema` returns it.

    Returns:
        The grammar's text, for ``llama_cpp.LlamaGrammar.from_string``.

    Raises:
        UnsupportedSchema: The schema holds a construct the grammar cannot
            enforce (``not``, ``oneOf``, ``allOf``, ``uniqueItems``, a number
            range other than the ones listed in docs/on-device.md, a string
            ``format`` other than a date, time or UUID, a remote ``$ref``...).
    """
    from llama_cpp import llama_grammar

    schema = copy.deepcopy(dict(schema))  # llama.cpp's converter rewrites each '$ref' in place.
    _check(schema, "", schema)
    if not schema:
        return str(llama_grammar.JSON_GBNF)
    if "$ref" in schema:
        # llama.cpp resolves only the '$ref's it reaches outside a '$ref': one at the root would
        # leave those in '$defs' (a recursive model's) unresolved. The same schema, as one choice:
        definitions = {name: value for name, value in schema.items() if name in ("$defs", "definitions")}
        schema = {**definitions, "anyOf": [{"$ref": schema["$ref"]}]}
    converter = _converter_class(llama_grammar)(
        prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False
    )
    try:
        converter.visit(converter.resolve_refs(schema, "response_schema"), "")
    except (AssertionError, ValueError, KeyError, TypeError) as error:  # What the check above missed.
        raise UnsupportedSchema("a construct llama.cpp's converter rejects", "", str(error)) from error
    return str(converter.format_grammar())


def _json_schema(schema: Any) -> dict[str, Any]:
    """Any schema shape genai accepts, as a JSON Schema dict."""
    if isinstance(schema, types.Schema):
        return _dump(schema)
    if isinstance(schema, Mapping):
        if _genai_spelling(schema):
            return _dump(types.Schema.model_validate(dict(schema)))
        return dict(schema)
    if isinstance(schema, type) and issubclass(schema, pydantic.BaseModel):
        return schema.model_json_schema()
    try:
        return pydantic.TypeAdapter(schema).json_schema()
    except Exception as error:
        raise ValueError(
            f"The response schema {schema!r} cannot be read as a JSON Schema: {error}"
        ) from error


def _dump(schema: types.Schema) -> dict[str, Any]:
    dumped: dict[str, Any] = schema.json_schema.model_dump(mode="json", by_alias=True, exclude_none=True)
    return dumped


def _genai_spelling(schema: Mapping[str, Any]) -> bool:
    """Whether a dict schema is written in genai's ``Schema`` spelling ("OBJECT", ``any_of``)."""
    for node in _nodes(schema):
        kind = node.get("type")
        if (isinstance(kind, str) and kind.isupper()) or _GENAI_KEYS.intersection(node):
            return True
    return False


def _nodes(schema: Any) -> Iterator[Mapping[str, Any]]:
    """Every mapping nested in ``schema``, itself first."""
    if isinstance(schema, Mapping):
        yield schema
        for value in schema.values():
            yield from _nodes(value)
    elif isinstance(schema, list):
        for item in schema:
            yield from _nodes(item)


def _check(schema: Any, path: str, root: Mapping[str, Any]) -> None:
    """Raises :class:`UnsupportedSchema` for the first construct the grammar cannot enforce."""
    if schema is True or schema == {}:
        return
    if not isinstance(schema, Mapping):
        raise UnsupportedSchema(
            f"the schema {json.dumps(schema)}", path, "Each (sub)schema is an object or true."
        )
    for name in ("$defs", "definitions"):
        for key, sub in (schema.get(name) or {}).items():
            _check(sub, f"{path}/{name}/{key}", root)
    keys = set(schema) - _ANNOTATIONS
    unenforceable = sorted(keys & _UNENFORCEABLE)
    if unenforceable:
        raise UnsupportedSchema(f"'{unenforceable[0]}'", path, _ADVICE.get(unenforceable[0], _REWRITE))
    if schema.get("uniqueItems"):
        raise UnsupportedSchema("'uniqueItems'", path, _REWRITE)
    if "$ref" in keys:
        ref = schema["$ref"]
        if not isinstance(ref, str) or not ref.startswith("#"):
            raise UnsupportedSchema(f"the remote '$ref' {ref!r}", path, "Inline it, or put it in '$defs'.")
        if not _resolves(root, ref):
            raise UnsupportedSchema(f"the '$ref' {ref!r} (to nothing)", path, "Define it in '$defs'.")
        _only("$ref", keys - {"$ref"}, path)
        return
    if "anyOf" in keys:
        if not schema["anyOf"]:
            raise UnsupportedSchema("an empty 'anyOf'", path, "No value is valid for it; give at least one.")
        _only("anyOf", keys - {"anyOf"}, path)
        for index, sub in enumerate(schema["anyOf"]):
            _check(sub, f"{path}/anyOf/{index}", root)
        return
    if "enum" in keys and not schema["enum"]:
        raise UnsupportedSchema("an empty 'enum'", path, "No value is valid for it; give at least one.")
    if "const" in keys or "enum" in keys:
        return  # The values are spelled out; nothing else can narrow them.
    kind = schema.get("type")
    if isinstance(kind, list):
        for name in kind:
            _check_type(name, path)
        _only("a list of types", keys - {"type"}, path, advice="Write an anyOf with one schema per type.")
        return
    if kind is not None:
        _check_type(kind, path)
    _check_object(schema, path, root)
    _check_array(schema, keys, path, root)
    _check_string(schema, keys, path)
    _check_number(schema, keys, path)


def _check_type(kind: object, path: str) -> None:
    if kind not in _TYPES:
        raise UnsupportedSchema(f"the type {kind!r}", path, f"The types are {sorted(_TYPES)}.")


def _check_object(schema: Mapping[str, Any], path: str, root: Mapping[str, Any]) -> None:
    properties = schema.get("properties") or {}
    undefined = [name for name in schema.get("required") or () if name not in properties]
    if undefined:
        raise UnsupportedSchema(
            f"'required' naming {undefined[0]!r} (not in 'properties')",
            path,
            "The grammar writes only the properties it is given: define each required one.",
        )
    for name, sub in properties.items():
        _check(sub, f"{path}/properties/{name}", root)
    extra = schema.get("additionalProperties")
    if isinstance(extra, Mapping):
        _check(extra, f"{path}/additionalProperties", root)


def _check_array(schema: Mapping[str, Any], keys: set[str], path: str, root: Mapping[str, Any]) -> None:
    counts = keys & {"minItems", "maxItems"}
    if "prefixItems" in keys:
        # A tuple's length is its prefixItems' (pydantic writes it as both bounds too).
        counts = {name for name in counts if schema[name] != len(schema["prefixItems"])}
        if "items" in keys or counts:
            construct = "'items'" if "items" in keys else f"'{sorted(counts)[0]}'"
            raise UnsupportedSchema(
                f"{construct} beside 'prefixItems'", path, "A tuple's items are exactly its prefixItems."
            )
        for index, sub in enumerate(schema["prefixItems"]):
            _check(sub, f"{path}/prefixItems/{index}", root)
    elif "items" in keys:
        if not isinstance(schema["items"], Mapping):
            raise UnsupportedSchema("'items' that is not a schema", path, "Use prefixItems for a tuple.")
        _check(schema["items"], f"{path}/items", root)
    elif counts:
        raise UnsupportedSchema(f"'{sorted(counts)[0]}' without 'items'", path, "Give the items' schema.")


def _check_string(schema: Mapping[str, Any], keys: set[str], path: str) -> None:
    lengths = keys & {"minLength", "maxLength"}
    if "pattern" in keys:
        clash = sorted(lengths | (keys & {"format"}))
        if clash:
            raise UnsupportedSchema(f"'{clash[0]}' beside 'pattern'", path, "Put the length in the pattern.")
        problem = _pattern_problem(schema["pattern"])
        if problem:
            raise UnsupportedSchema(f"the pattern {schema['pattern']!r}", path, problem)
    elif "format" in keys:
        form = schema["format"]
        if form not in _STRING_FORMATS:
            raise UnsupportedSchema(
                f"the string format {form!r}",
                path,
                f"The formats it enforces are {sorted(_STRING_FORMATS)}; use a 'pattern' for others.",
            )
        if lengths:
            raise UnsupportedSchema(f"'{sorted(lengths)[0]}' beside 'format'", path, _REWRITE)


def _pattern_problem(pattern: object) -> str | None:
    """Why llama.cpp's converter cannot turn ``pattern`` into grammar, or None if it can."""
    from llama_cpp import llama_grammar

    if not isinstance(pattern, str) or not (pattern.startswith("^") and pattern.endswith("$")):
        return "The grammar takes a pattern anchored at both ends, '^...$' (it matches the whole string)."
    converter = _converter_class(llama_grammar)(
        prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False
    )
    try:
        converter.visit({"type": "string", "pattern": pattern}, "")
    except (AssertionError, ValueError) as error:  # The converter asserts on syntax it does not support.
        return f"llama.cpp's converter says: {error}."
    return None


def _resolves(root: Mapping[str, Any], ref: str) -> bool:
    """Whether a local ``$ref`` (a JSON pointer into ``root``) names a schema."""
    node: Any = root
    for token in ref[1:].split("/")[1:] if ref != "#" else ():
        token = token.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, Mapping) or token not in node:
            return False
        node = node[token]
    return isinstance(node, (Mapping, bool))


def _check_number(schema: Mapping[str, Any], keys: set[str], path: str) -> None:
    bounds = keys & {"minimum", "maximum"}
    if not bounds or _bounded_rule(schema) is not None:
        return
    if schema.get("type") not in ("number", "integer"):
        raise UnsupportedSchema(f"'{sorted(bounds)[0]}' without a number type", path, _RANGES)
    raise UnsupportedSchema(
        f"the range minimum={schema.get('minimum')}, maximum={schema.get('maximum')}", path, _RANGES
    )


def _only(what: str, others: set[str], path: str, *, advice: str = "") -> None:
    """Raises when ``what`` stands beside keywords the converter would skip."""
    if others:
        raise UnsupportedSchema(
            f"'{sorted(others)[0]}' beside {what if what.startswith('a ') else repr(what)}",
            path,
            advice or f"The grammar reads {what} alone; move the other keywords into its schemas.",
        )


def _bounded_rule(schema: Mapping[str, Any]) -> str | None:
    """The grammar of a bounded number the grammar can spell, or None.

    Numbers in [0, 1] (a probability), numbers and integers of at least 0,
    and integer ranges of up to :data:`_MAX_INTEGER_RANGE` values.
    """
    kind = schema.get("type")
    low, high = schema.get("minimum"), schema.get("maximum")
    if not all(bound is None or _is_number(bound) for bound in (low, high)):
        return None
    if kind == "number" and low == 0 and high == 1:
        return '("0" ("." [0-9]{1,6})? | "1" ("." "0"{1,6})?) space'
    if kind in ("number", "integer") and low == 0 and high is None:
        fraction = ' ("." [0-9]{1,15})?' if kind == "number" else ""
        return f'("0" | [1-9] [0-9]{{0,15}}){fraction} space'
    if kind == "integer" and low is not None and high is not None:
        first, last = math.ceil(low), math.floor(high)
        if 0 <= last - first < _MAX_INTEGER_RANGE:
            return "(" + " | ".join(f'"{value}"' for value in range(first, last + 1)) + ") space"
    return None


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _converter_class(llama_grammar: Any) -> type[Any]:
    """llama.cpp's schema converter, taught the bounded numbers of :func:`_bounded_rule`."""

    class _Converter(llama_grammar.SchemaConverter):  # type: ignore[misc,unused-ignore]  # llama_cpp is untyped.
        def visit(self, schema: Any, name: str) -> Any:
            rule = _bounded_rule(schema) if isinstance(schema, Mapping) else None
            if rule is None:
                return super().visit(schema, name)
            rule_name = name + "-" if name in llama_grammar.RESERVED_NAMES else name or "root"
            return self._add_rule(rule_name, rule)

    return _Converter


_REWRITE = "Drop it, or rewrite the schema without it (docs/on-device.md lists what is enforced)."
_RANGES = (
    "The grammar enforces numbers in [0, 1], numbers and integers of at least 0, and integer ranges "
    f"of up to {_MAX_INTEGER_RANGE} values."
)
_ADVICE = {
    "oneOf": "Use anyOf with alternatives that cannot both match.",
    "allOf": "Merge the schemas into one.",
}
