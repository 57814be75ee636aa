"""Routing between models for Google's Agent Development Kit (ADK).

``RoutedLlm`` is one ADK model that holds several and asks a router which one
serves each request, failing over when the chosen model breaks before it has
said anything; ``RoutedAgent`` does the same between whole agents. Ready-made
routers for both live in :mod:`routed_llm.strategies`.
"""

from __future__ import annotations

from routed_llm.agent import AgentRouter, RoutedAgent
from routed_llm.analysis import ArmStats, format_arm_table, tabulate_arms
from routed_llm.errors import (
    AttemptTimeout,
    BudgetExhausted,
    CircuitOpen,
    DeadlineExceeded,
    ErrorClass,
    HedgeDelay,
    NoResponse,
    PermanentModelError,
    ResponseRejected,
    RoutingError,
    StreamStalled,
    TransientModelError,
    classify_error,
    fall_back_across_providers,
    is_transient,
)
from routed_llm.health import HealthChangeEvent, HealthTracker, counts_against_health, retry_after
from routed_llm.invocation import (
    InvocationInfo,
    RoutingPlugin,
    capture_invocation,
    current_invocation,
    invocation_scope,
)
from routed_llm.latency import LatencyTracker
from routed_llm.limits import Limit, RateLimits
from routed_llm.live import RoutedConnection
from routed_llm.observability import FailoverEvent, HedgeEvent, RouteEvent
from routed_llm.routed import RoutedLlm
from routed_llm.routing import METADATA_KEY, ErrorContext, Judge, LlmRouter, annotate_route
from routed_llm.strategies import (
    CLOUD,
    ON_DEVICE,
    PREFER_IN_CLOUD,
    PREFER_ON_DEVICE,
    ABTestStrategy,
    ClassifierStrategy,
    ConnectivityStrategy,
    FallbackStrategy,
    FastestFirst,
    FirstMatch,
    InputSizeStrategy,
    PreRoutingStrategy,
    RoutingContext,
    StickyPerInvocation,
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
    "ABTestStrategy",
    "AgentRouter",
    "ArmStats",
    "AttemptTimeout",
    "BudgetExhausted",
    "CircuitOpen",
    "ClassifierStrategy",
    "ConnectivityStrategy",
    "DeadlineExceeded",
    "ErrorClass",
    "ErrorContext",
    "FailoverEvent",
    "FallbackStrategy",
    "FastestFirst",
    "FirstMatch",
    "HealthChangeEvent",
    "HealthTracker",
    "HedgeDelay",
    "HedgeEvent",
    "InputSizeStrategy",
    "InvocationInfo",
    "Judge",
    "LatencyTracker",
    "Limit",
    "LlmRouter",
    "NoResponse",
    "PermanentModelError",
    "PreRoutingStrategy",
    "RateLimits",
    "ResponseRejected",
    "RouteEvent",
    "RoutedAgent",
    "RoutedConnection",
    "RoutedLlm",
    "RoutingContext",
    "RoutingError",
    "RoutingPlugin",
    "StickyPerInvocation",
    "Strategy",
    "StreamStalled",
    "TransientModelError",
    "WithFallback",
    "annotate_route",
    "capture_invocation",
    "classify_error",
    "counts_against_health",
    "current_invocation",
    "fall_back_across_providers",
    "format_arm_table",
    "hybrid_model_on_device_cloud",
    "invocation_scope",
    "is_transient",
    "retry_after",
    "tabulate_arms",
]
