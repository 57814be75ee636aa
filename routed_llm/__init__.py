"""Routing between models for Google's Agent Development Kit (ADK).

``RoutedLlm`` is one ADK model that holds several and asks a router which one
serves each request, failing over when the chosen model breaks before it has
said anything. Ready-made routers live in :mod:`routed_llm.strategies`.
"""

from __future__ import annotations

from routed_llm.errors import PermanentModelError, RoutingError, TransientModelError, is_transient
from routed_llm.routed import RoutedLlm
from routed_llm.routing import METADATA_KEY, ErrorContext, LlmRouter
from routed_llm.strategies import (
    CLOUD,
    ON_DEVICE,
    PREFER_IN_CLOUD,
    PREFER_ON_DEVICE,
    ConnectivityStrategy,
    FallbackStrategy,
    FirstMatch,
    InputSizeStrategy,
    PreRoutingStrategy,
    RoutingContext,
    Strategy,
    WithFallback,
    hybrid_model_on_device_cloud,
)

__all__ = [
    "CLOUD",
    "METADATA_KEY",
    "ON_DEVICE",
    "PREFER_IN_CLOUD",
    "PREFER_ON_DEVICE",
    "ConnectivityStrategy",
    "ErrorContext",
    "FallbackStrategy",
    "FirstMatch",
    "InputSizeStrategy",
    "LlmRouter",
    "PermanentModelError",
    "PreRoutingStrategy",
    "RoutedLlm",
    "RoutingContext",
    "RoutingError",
    "Strategy",
    "TransientModelError",
    "WithFallback",
    "hybrid_model_on_device_cloud",
    "is_transient",
]
