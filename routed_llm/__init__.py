"""Routing between models for Google's Agent Development Kit (ADK).

``RoutedLlm`` is one ADK model that holds several and asks a router which one
serves each request, failing over when the chosen model breaks before it has
said anything. Ready-made routers live in :mod:`routed_llm.strategies`.
"""

from __future__ import annotations

from routed_llm.errors import PermanentModelError, RoutingError, TransientModelError, is_transient
from routed_llm.routed import RoutedLlm
from routed_llm.routing import METADATA_KEY, ErrorContext, LlmRouter

__all__ = [
    "METADATA_KEY",
    "ErrorContext",
    "LlmRouter",
    "PermanentModelError",
    "RoutedLlm",
    "RoutingError",
    "TransientModelError",
    "is_transient",
]
