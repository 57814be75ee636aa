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
  does), estimated with :func:`~routed_llm.strategies.estimate_tokens`
  (only until the estimate reaches the window).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from google.adk.models.base_llm import BaseLlm
from google.adk.models.llm_request import LlmRequest
from google.adk.utils.model_name_utils import _supports_builtin_tools_with_function_calling
from google.genai import types

from routed_llm.signatures import is_gemini

__all__ = ["builtin_tools", "name_prefix", "unserved_need"]

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


def name_prefix(models: Iterable[BaseLlm]) -> str:
    """The start of a routed model's default name, which ADK reads as a model name.

    ADK puts the routed model's name on the request before its Gemini
    built-in tools (``google_search``, ``url_context``, the built-in code
    executor) look for a Gemini model name, and before its agent-transfer
    step asks whether that model (Gemini 3 and later) takes built-in tools
    beside function declarations, such as an agent with sub-agents sends.

    Args:
        models: The routed models.

    Returns:
        ``"gemini-3-routed"`` when every Gemini model among them takes
        built-in tools beside function declarations, ``"gemini-routed"``
        when some Gemini model does not, and ``"RoutedLlm"`` when none is a
        Gemini model.
    """
    geminis = [model for model in models if is_gemini(model)]
    if not geminis:
        return "RoutedLlm"
    if all(_supports_builtin_tools_with_function_calling(model.model) for model in geminis):
        return "gemini-3-routed"
    return "gemini-routed"


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
        tokens = _tokens_reaching(llm_request, window)
        if tokens >= window:
            return (
                f"the input is at least {tokens} tokens by estimate, over the context window of "
                f"{model.model!r} ({window} tokens)"
            )
    return None


def _tokens_reaching(llm_request: LlmRequest, window: int) -> int:
    """The estimate of ``llm_request``'s tokens (``estimate_tokens``), counted until it reaches ``window``.

    A long conversation over a small window is known to be over it after a
    few messages: the rest is not estimated (the estimate costs about 0.3 ms
    a message of 1,000 characters, on the event loop, every time a strategy
    asks).
    """
    from routed_llm._text import message_texts
    from routed_llm.strategies.text import TOKENS_PER_MESSAGE, _text_tokens

    tokens = 0
    for text in message_texts(llm_request):
        tokens += TOKENS_PER_MESSAGE + math.ceil(_text_tokens(text))
        if tokens >= window:
            break
    return tokens
