"""Ready-made routing strategies, each usable directly as a ``RoutedLlm`` router.

After Genkit's ``genkit_hybrid``: a strategy looks at a
:class:`RoutingContext` and names a key, or makes no decision (``None`` or
``""``). Strategies compose (:class:`FirstMatch`, :class:`WithFallback`) and
every one of them is also a router, so any strategy can be passed as
``RoutedLlm(router=...)`` with any keys::

    ONE_ATTEMPT = types.HttpRetryOptions(attempts=1)  # no SDK retries: fail over at once

    llm = RoutedLlm(
        models={
            "flash": Gemini(model="gemini-2.5-flash", retry_options=ONE_ATTEMPT),
            "pro": Gemini(model="gemini-2.5-pro", retry_options=ONE_ATTEMPT),
        },
        router=FallbackStrategy(["flash", "pro"]),
    )

For the on-device + cloud case the keys :data:`ON_DEVICE` and :data:`CLOUD`
and :func:`~routed_llm.hybrid_model_on_device_cloud` save the wiring.

Which strategies fall back: :class:`FallbackStrategy` and
:class:`WithFallback` choose again after a failure, and only when
:func:`~routed_llm.is_transient` says the failure may fall back. The others
decide the first pick only and make no decision after a failure, so on their
own they do not fall back: wrap them in :class:`WithFallback`.

The strategies live in modules by family, and every name is importable from
here: :mod:`~routed_llm.strategies.base` (the context, the interface, and
the rules that compose strategies), :mod:`~routed_llm.strategies.hybrid`
(fallback order, connectivity, input size, the on-device and cloud keys),
:mod:`~routed_llm.strategies.experiments` (A/B tests, sticky per
invocation), :mod:`~routed_llm.strategies.classifier` (routing on a
classifier's answer), :mod:`~routed_llm.strategies.latency` (the fastest key
first) and :mod:`~routed_llm.strategies.text` (request text and token
estimates).
"""

from __future__ import annotations

from routed_llm.errors import is_transient
from routed_llm.strategies.base import Decision as Decision
from routed_llm.strategies.base import (
    FirstMatch,
    PreRoutingStrategy,
    RoutingContext,
    Strategy,
    WithFallback,
)
from routed_llm.strategies.base import TransientPolicy as TransientPolicy
from routed_llm.strategies.base import decide as decide
from routed_llm.strategies.classifier import ClassifierStrategy, model_input_text
from routed_llm.strategies.experiments import ABTestStrategy, StickyPerInvocation
from routed_llm.strategies.hybrid import (
    CLOUD,
    ON_DEVICE,
    PREFER_IN_CLOUD,
    PREFER_ON_DEVICE,
    ConnectivityStrategy,
    FallbackStrategy,
    InputSizeStrategy,
    hybrid_model_on_device_cloud,
)
from routed_llm.strategies.latency import FastestFirst
from routed_llm.strategies.text import TOKENS_PER_MESSAGE, estimate_tokens, request_text

__all__ = [
    "CLOUD",
    "ON_DEVICE",
    "PREFER_IN_CLOUD",
    "PREFER_ON_DEVICE",
    "TOKENS_PER_MESSAGE",
    "ABTestStrategy",
    "ClassifierStrategy",
    "ConnectivityStrategy",
    "FallbackStrategy",
    "FastestFirst",
    "FirstMatch",
    "InputSizeStrategy",
    "PreRoutingStrategy",
    "RoutingContext",
    "StickyPerInvocation",
    "Strategy",
    "WithFallback",
    "estimate_tokens",
    "hybrid_model_on_device_cloud",
    "is_transient",
    "model_input_text",
    "request_text",
]
