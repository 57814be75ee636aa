"""A router that cannot take the three arguments it is called with is refused at construction."""

from __future__ import annotations

import functools

import pytest
from google.adk.agents import LlmAgent

from routed_llm import RoutedAgent, RoutedLlm
from routed_llm.testing import ScriptedLlm
from tests.conftest import run_agent, texts


def two_parameters(models, llm_request):
    return "a"


def four_parameters(models, llm_request, error_context, tier):
    return "a"


def keyword_only_flag(models, llm_request, error_context, *, tier):
    return "a"


def star_args(*args):
    return "a"


def defaulted(models, llm_request=None, error_context=None, tier="basic"):
    return "a"


async def asynchronous(models, llm_request, error_context):
    return "a"


class CallableRouter:
    def __call__(self, models, llm_request, error_context):
        return "a"


def tiered(tier, models, llm_request, error_context):
    return "a" if tier == "premium" else None


def scripted() -> ScriptedLlm:
    return ScriptedLlm(model="model-a", script=["answered by a"])


@pytest.mark.parametrize(
    ("router", "shown"),
    [
        (two_parameters, r"two_parameters\(models, llm_request\)"),
        (four_parameters, r"four_parameters\(models, llm_request, error_context, tier\)"),
        (keyword_only_flag, r"keyword_only_flag\(models, llm_request, error_context, \*, tier\)"),
        (lambda models, request: "a", r"<lambda>\(models, request\)"),
    ],
    ids=["two", "four", "keyword-only", "lambda"],
)
def test_a_routed_llm_router_with_the_wrong_parameters_is_refused_naming_its_signature(router, shown):
    with pytest.raises(TypeError, match=rf"router\(models, llm_request, error_context\).*{shown}"):
        RoutedLlm(models={"a": scripted()}, router=router)


def test_a_routed_agent_router_taking_two_parameters_is_refused_naming_how_it_is_called():
    with pytest.raises(TypeError, match=r"router\(agents, invocation_context, error_context\)"):
        RoutedAgent(name="support", agents={"a": LlmAgent(name="a", model=scripted())}, router=two_parameters)


def test_the_refusal_chains_pythons_own_arity_error():
    with pytest.raises(TypeError) as raised:
        RoutedLlm(models={"a": scripted()}, router=two_parameters)

    assert isinstance(raised.value.__cause__, TypeError)
    assert "too many positional arguments" in str(raised.value.__cause__)


@pytest.mark.parametrize(
    "router",
    [
        star_args,
        defaulted,
        asynchronous,
        CallableRouter(),
        functools.partial(tiered, "premium"),
        lambda *_: "a",
    ],
    ids=["star-args", "defaults", "async", "callable-object", "partial", "lambda-star"],
)
async def test_a_router_that_can_take_three_arguments_is_accepted_and_routes(router):
    agent = LlmAgent(name="assistant", model=RoutedLlm(models={"a": scripted()}, router=router))

    events, _ = await run_agent(agent, "hi")

    assert texts(events) == ["answered by a"]
