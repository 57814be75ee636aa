"""An A/B test of two instructions (prompts), not two models, over 200 users.

Each user is assigned an arm by a stable hash of their id, so a user keeps
their arm across sessions; the route record on every event names the arm,
and ``tabulate_arms`` reads the stored sessions back into a table.

Run: ``python examples/routed_agent/prompt_ab.py``
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from google.adk.agents import LlmAgent
from google.adk.apps import App
from google.adk.models.llm_request import LlmRequest
from google.adk.runners import InMemoryRunner
from google.genai import types

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from routed_agent.agent import answer
from routed_llm import ABTestStrategy, RoutedAgent, format_arm_table, tabulate_arms
from routed_llm.testing import ScriptedLlm, Step

USERS = [f"user-{number:03d}" for number in range(200)]


def follows_instruction(request: LlmRequest) -> Step:
    """A stand-in model whose answer's length follows the instruction, as a real one's would."""
    instruction = str(request.config.system_instruction or "")
    text = (
        "Reset it under Settings."
        if "one sentence" in instruction
        else (
            "Open Settings, choose Security, then Reset password. You'll get an e-mail with a link "
            "valid for an hour; follow it and pick a new password of at least twelve characters."
        )
    )
    return answer(request, types.Part(text=text))


def make_agent() -> RoutedAgent:
    model = ScriptedLlm(model="support-model", script=follows_instruction)
    return RoutedAgent(
        name="support",
        agents={
            "concise": LlmAgent(name="concise", model=model, instruction="Answer in one sentence."),
            "step_by_step": LlmAgent(name="step_by_step", model=model, instruction="Answer step by step."),
        },
        router=ABTestStrategy("support-prompt", {"concise": 50, "step_by_step": 50}, default_arm="concise"),
    )


async def main() -> None:
    runner = InMemoryRunner(app=App(name="prompt_ab", root_agent=make_agent()))
    events = []
    for user in USERS:
        session = await runner.session_service.create_session(app_name="prompt_ab", user_id=user)
        message = types.Content(role="user", parts=[types.Part(text="How do I reset my password?")])
        async for _ in runner.run_async(user_id=user, session_id=session.id, new_message=message):
            pass
        stored = await runner.session_service.get_session(
            app_name="prompt_ab", user_id=user, session_id=session.id
        )
        assert stored is not None
        events += stored.events
    print(format_arm_table(tabulate_arms(events, experiment="support-prompt")))


if __name__ == "__main__":
    asyncio.run(main())
