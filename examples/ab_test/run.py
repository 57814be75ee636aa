"""An A/B experiment between two models, analysed from the stored sessions.

200 simulated users each ask one question. ``ABTestStrategy`` sends about 80%
of users to "flash" and 20% to "pro", the same arm every time for a user;
"pro" is flaky here and falls back to "flash". Afterwards the session events
are tabulated per arm, and one model call's OpenTelemetry span is printed
with its routing attributes.

Run: ``python examples/ab_test/run.py``
"""

from __future__ import annotations

import asyncio
import itertools
import logging

from google.adk.agents import LlmAgent
from google.adk.apps import App
from google.adk.models.llm_request import LlmRequest
from google.adk.models.llm_response import LlmResponse
from google.adk.runners import InMemoryRunner
from google.genai import types
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from routed_llm import RoutedLlm, RoutingPlugin, format_arm_table, tabulate_arms
from routed_llm.strategies import ABTestStrategy, WithFallback
from routed_llm.testing import ScriptedLlm

USERS = 200


def stand_in(name: str, *, fail_every: int = 0) -> ScriptedLlm:
    """A stand-in model that answers with token usage, failing every n-th call."""
    calls = itertools.count(1)

    def answer(request: LlmRequest) -> LlmResponse | Exception:
        if fail_every and next(calls) % fail_every == 0:
            return ConnectionError(f"{name} is overloaded")
        text = f"{name} says hello"
        return LlmResponse(
            content=types.Content(role="model", parts=[types.Part(text=text)]),
            usage_metadata=types.GenerateContentResponseUsageMetadata(
                prompt_token_count=12, candidates_token_count=len(text.split()) * (3 if name == "pro" else 1)
            ),
        )

    return ScriptedLlm(model=name, script=answer)


experiment = ABTestStrategy("flash-vs-pro", {"flash": 80, "pro": 20}, default_arm="flash")
root_agent = LlmAgent(
    name="assistant",
    model=RoutedLlm(
        models=[stand_in("flash"), stand_in("pro", fail_every=4)],
        router=WithFallback(experiment, fallback_order=["flash"]),
    ),
)


async def main() -> None:
    # The stand-in models report no token usage, which ADK's telemetry warns about.
    logging.getLogger("google_adk.google.adk.telemetry").setLevel(logging.ERROR)
    logging.getLogger("routed_llm").setLevel(logging.ERROR)
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    trace.set_tracer_provider(provider)

    runner = InMemoryRunner(app=App(name="ab_demo", root_agent=root_agent, plugins=[RoutingPlugin()]))
    events = []
    for index in range(USERS):
        user = f"user-{index}"
        session = await runner.session_service.create_session(app_name="ab_demo", user_id=user)
        message = types.Content(role="user", parts=[types.Part(text="Hello!")])
        async for _ in runner.run_async(user_id=user, session_id=session.id, new_message=message):
            pass
        stored = await runner.session_service.get_session(
            app_name="ab_demo", user_id=user, session_id=session.id
        )
        events += stored.events if stored else []

    print(format_arm_table(tabulate_arms(events, experiment="flash-vs-pro")))
    routed = [
        span for span in spans.get_finished_spans() if "routed_llm.failed_keys" in (span.attributes or {})
    ]
    failed_over = next(span for span in routed if span.attributes["routed_llm.failed_keys"])
    print(f"\nspan {failed_over.name!r}:")
    for name, value in sorted(failed_over.attributes.items()):
        if name.startswith("routed_llm."):
            print(f"  {name} = {list(value) if isinstance(value, tuple) else value!r}")
    for event in failed_over.events:
        if event.name.startswith("routed_llm."):
            print(f"  event {event.name}: {dict(event.attributes)}")


if __name__ == "__main__":
    asyncio.run(main())
