"""Whether a model can serve a request: what the request needs that the model lacks.

One check, read by strategies through
:meth:`~routed_llm.strategies.RoutingContext.is_available` and made before
every attempt of a :class:`~routed_llm.RoutedLlm`. A key is unavailable for a
request that carries:

* a Gemini built-in tool (``google_search``, ``url_context``, the built-in
  code executor, ...) when its model is not a Gemini model;
* an output schema together with tools, when its model's
  ``capabilities.output_schema_and_tools`` is False;
* an input over the model's context window, when the model declares one
  (a ``context_window`` attribute, as :class:`~routed_llm.LlamaCppLlm`
  does), estimated with :func:`~routed_llm.strategies.estimate_tokens`.
"""

from __future__ import annotations

from google.adk.models.base_llm import BaseLlm
from google.adk.models.llm_request import LlmRequest
from google.genai import types

from routed_llm.signatures import is_gemini

__all__ = ["builtin_tools", "unserved_need"]

_NOT_BUILT_IN = frozenset({"function_declarations"})


def builtin_tools(llm_request: LlmRequest) -> list[str]:
    """The Gemini built-in tools ``llm_request`` carries, by their field name (e.g. ``google_search``)."""
    config = llm_request.config
    if config is None or not config.tools:
        return []
    names: list[str] = []
    for tool in config.tools:
        if isinstance(tool, types.Tool):
            names += [
                name
                for name in type(tool).model_fields
                if name not in _NOT_BUILT_IN and getattr(tool, name) is not None and name not in names
            ]
    return names


def unserved_need(model: BaseLlm, llm_request: LlmRequest) -> str | None:
    """Says what ``llm_request`` needs that ``model`` lacks.

    Args:
        model: The model a key routes to.
        llm_request: The request being routed.

    Returns:
        A reason, e.g. ``"the request carries the Gemini built-in tool
        google_search, and 'gpt-4o' is not a Gemini model"``; None when the
        model can serve the request.
    """
    tools = builtin_tools(llm_request)
    if tools and not is_gemini(model):
        return (
            f"the request carries the Gemini built-in tool {', '.join(tools)}, "
            f"and {model.model!r} is not a Gemini model"
        )
    config = llm_request.config
    if (
        config is not None
        and (config.response_schema is not None or config.response_json_schema is not None)
        and config.tools
        and not model.capabilities.output_schema_and_tools
    ):
        return f"the request has an output schema with tools, which {model.model!r} cannot combine"
    window = getattr(model, "context_window", None)
    if isinstance(window, int) and not isinstance(window, bool):
        from routed_llm.strategies.text import estimate_tokens

        tokens = estimate_tokens(llm_request)
        if tokens >= window:
            return (
                f"the input is about {tokens} tokens, over the context window of {model.model!r} "
                f"({window} tokens)"
            )
    return None
