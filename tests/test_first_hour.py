"""A newcomer's first-hour mistakes fail clearly, naming the fix, instead of silently or confusingly."""

from __future__ import annotations

import shutil
import warnings

import pytest
from google.adk.agents import LlmAgent

from routed_llm import RoutedLlm, RoutingPlugin, invocation_scope
from routed_llm.strategies import (
    FallbackStrategy,
    FirstMatch,
    RoutingContext,
    StickyPerInvocation,
    Strategy,
    WithFallback,
)
from routed_llm.testing import ScriptedLlm
from tests.conftest import make_request, make_runner, run_agent, texts


class PremiumToPro(Strategy):
    """Premium users to 'pro', everyone else to 'flash'; records the tier it saw."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def decide(self, ctx: RoutingContext) -> str:
        invocation = ctx.invocation
        tier = invocation.state.get("tier", "basic") if invocation else "unknown"
        self.seen.append(tier)
        return "pro" if tier == "premium" else "flash"


def premium_agent(strategy: Strategy) -> LlmAgent:
    answering = {key: ScriptedLlm(model=key, script=lambda request: "ok") for key in ("flash", "pro")}
    return LlmAgent(name="assistant", model=RoutedLlm(models=answering, router=strategy))


async def run_premium_turns(agent: LlmAgent, *, turns: int, plugins: list | None = None) -> None:
    runner = make_runner(agent, plugins=plugins)
    session = await runner.session_service.create_session(
        app_name="test_app", user_id="ada", state={"tier": "premium"}
    )
    for _ in range(turns):
        await run_agent(agent, "hi", runner=runner, user_id="ada", session_id=session.id)


def not_captured(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(warning.message) for warning in caught if "ctx.invocation is None" in str(warning.message)]


async def test_a_strategy_reading_ctx_invocation_without_the_routing_plugin_warns_once_naming_the_fix():
    strategy = PremiumToPro()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")  # Python's own default, as an app runs.
        await run_premium_turns(premium_agent(strategy), turns=2)

    [message] = not_captured(caught)
    assert "App(plugins=[RoutingPlugin()])" in message
    assert strategy.seen == ["unknown", "unknown"]


async def test_the_warning_points_at_the_line_that_read_ctx_invocation():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        await run_premium_turns(premium_agent(PremiumToPro()), turns=1)

    [warning] = [warning for warning in caught if "ctx.invocation is None" in str(warning.message)]
    assert warning.filename == __file__
    assert warning.category is UserWarning


async def test_with_the_routing_plugin_ctx_invocation_is_set_and_nothing_warns():
    strategy = PremiumToPro()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        await run_premium_turns(premium_agent(strategy), turns=1, plugins=[RoutingPlugin()])

    assert not_captured(caught) == []
    assert strategy.seen == ["premium"]


async def test_an_invocation_scope_of_none_reports_no_invocation_without_a_warning():
    strategy = PremiumToPro()

    with warnings.catch_warnings(record=True) as caught, invocation_scope(None):
        warnings.simplefilter("always")
        await strategy({}, make_request(), None)

    assert not_captured(caught) == []
    assert strategy.seen == ["unknown"]


@pytest.mark.parametrize(
    ("build", "named"),
    [
        (lambda: WithFallback(FallbackStrategy, fallback_order=["b"]), r"WithFallback\(strategy\)"),
        (lambda: FirstMatch([FallbackStrategy]), r"FirstMatch\(\[\.\.\.\]\)\[0\]"),
        (lambda: StickyPerInvocation(FallbackStrategy), r"StickyPerInvocation\(strategy\)"),
    ],
    ids=["WithFallback", "FirstMatch", "StickyPerInvocation"],
)
def test_a_strategy_class_given_instead_of_an_instance_is_named_with_the_fix(build, named):
    with pytest.raises(
        TypeError, match=rf"{named} got the class FallbackStrategy; pass an instance"
    ) as raised:
        build()

    assert "ABCMeta" not in str(raised.value)


def test_a_llama_cpp_model_from_a_file_is_named_after_the_file():
    from routed_llm.ondevice import LlamaCppLlm

    assert LlamaCppLlm(model_path="~/models/gemma-3-1b-it-q4.gguf").model == "gemma-3-1b-it-q4"


def test_a_llama_cpp_model_keeps_a_name_given_to_it():
    from routed_llm.ondevice import LlamaCppLlm

    assert LlamaCppLlm(model="gemma", model_path="~/models/gemma-3-1b-it-q4.gguf").model == "gemma"


async def test_a_llama_cpp_model_from_a_file_reports_the_files_name_in_route_records(tmp_path):
    pytest.importorskip("llama_cpp", reason="install the 'ondevice' extra (nox does)")
    from routed_llm.ondevice import LlamaCppLlm, default_model_path

    weights = tmp_path / "my-tiny-model.Q4_1.gguf"
    shutil.copyfile(default_model_path(), weights)
    device = LlamaCppLlm(model_path=str(weights), n_ctx=512)
    agent = LlmAgent(
        name="assistant",
        model=RoutedLlm(models={"on_device": device}, router=FallbackStrategy(["on_device"])),
        generate_content_config={"max_output_tokens": 2, "temperature": 0.0},
    )

    events, _ = await run_agent(agent, "Say hi.")

    assert texts(events)
    assert events[-1].custom_metadata["routed_llm"]["model"] == "my-tiny-model.Q4_1"
