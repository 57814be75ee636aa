"""Reading experiments back out of stored session events.

Every response a ``RoutedLlm`` serves records its route in
``custom_metadata["routed_llm"]``, every event a ``RoutedAgent`` passes on in
``custom_metadata["routed_agent"]``, and ADK stores both with the session's
events. :func:`tabulate_arms` counts, per A/B arm, the answers, the failovers
and the tokens::

    events = [event for session in sessions for event in session.events]
    for stats in tabulate_arms(events, experiment="flash-vs-pro").values():
        print(stats)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from google.adk.models.llm_response import LlmResponse

from routed_llm.agent import METADATA_KEY as AGENT_METADATA_KEY
from routed_llm.routing import METADATA_KEY

__all__ = ["ArmStats", "format_arm_table", "tabulate_arms"]


@dataclass(frozen=True)
class ArmStats:
    """What one arm of an experiment did.

    Attributes:
        arm: The arm's key.
        answers: Final (non-partial) responses recorded for the arm.
        failovers: Of those, how many another key served after the arm failed.
        served_by: How many answers each key served.
        prompt_tokens: Prompt tokens over all answers.
        output_tokens: Output (candidate) tokens over all answers.
    """

    arm: str
    answers: int = 0
    failovers: int = 0
    served_by: tuple[tuple[str, int], ...] = ()
    prompt_tokens: int = 0
    output_tokens: int = 0

    @property
    def failover_rate(self) -> float:
        """Failovers per answer (0.0 with no answers)."""
        return self.failovers / self.answers if self.answers else 0.0


def tabulate_arms(events: Iterable[LlmResponse], *, experiment: str | None = None) -> dict[str, ArmStats]:
    """Counts answers, failovers and tokens per A/B arm.

    A ``RoutedLlm``'s arm counts each model response as an answer. A
    ``RoutedAgent``'s arm counts each invocation once, however many events
    (tool calls, sub-agents' replies) it took, with the tokens of all its
    model calls; events of a resumed agent (an answered function call) add
    their tokens to the invocation that made the call without counting as
    another answer. Arms recorded by a routed model or agent nested inside
    another (under ``"inner"``) count too.

    Args:
        events: Session events (or any ``LlmResponse``). Partial streaming
            chunks and events without an arm are skipped.
        experiment: Only this experiment's events; all experiments if None.

    Returns:
        The statistics by arm, in the order arms first appear.
    """
    table: dict[str, ArmStats] = {}
    counted: set[tuple[str, str, str]] = set()  # (invocation, router, arm) already answered.
    for event in events:
        if event.partial:
            continue
        for metadata_key, route in _routes(event):
            if "arm" not in route or (experiment is not None and route.get("experiment") != experiment):
                continue
            arm = str(route["arm"])
            if metadata_key == METADATA_KEY:
                answer = True
            else:
                invocation = getattr(event, "invocation_id", None) or str(id(event))
                group = (invocation, str(route.get("router")), arm)
                answer = group not in counted and not route.get("resumed")
                counted.add(group)
            stats = table.get(arm, ArmStats(arm=arm))
            served = dict(stats.served_by)
            if answer:
                served[route["key"]] = served.get(route["key"], 0) + 1
            usage = event.usage_metadata
            table[arm] = replace(
                stats,
                answers=stats.answers + answer,
                failovers=stats.failovers + (1 if answer and route.get("failed_keys") else 0),
                served_by=tuple(served.items()),
                prompt_tokens=stats.prompt_tokens + ((usage.prompt_token_count or 0) if usage else 0),
                output_tokens=stats.output_tokens + ((usage.candidates_token_count or 0) if usage else 0),
            )
    return table


def _routes(event: LlmResponse) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every route record on ``event``, nested ones (``"inner"``) included."""
    metadata = event.custom_metadata or {}
    for metadata_key in (METADATA_KEY, AGENT_METADATA_KEY):
        route = metadata.get(metadata_key)
        while isinstance(route, dict):
            yield metadata_key, route
            route = route.get("inner")


def format_arm_table(table: dict[str, ArmStats]) -> str:
    """Renders :func:`tabulate_arms`' result as a Markdown table."""
    lines = [
        "| arm | answers | failovers | served by | prompt tokens | output tokens |",
        "|---|---:|---:|---|---:|---:|",
    ]
    for stats in table.values():
        served = ", ".join(f"{key}: {count}" for key, count in stats.served_by)
        lines.append(
            f"| {stats.arm} | {stats.answers} | {stats.failovers} ({stats.failover_rate:.0%}) | {served} "
            f"| {stats.prompt_tokens} | {stats.output_tokens} |"
        )
    return "\n".join(lines)
