"""Keys whose model lacks what a request needs are unavailable for it."""

from __future__ import annotations

import pytest
from google.adk.agents import LlmAgent
from google.adk.models._capabilities import LlmCapabilities
from google.genai import types
from pydantic import BaseModel

from routed_llm import HealthTracker, RoutedLlm, RoutingError
from routed_llm.ondevice import LlamaCppLlm
from routed_llm.strategies import CLOUD, ON_DEVICE, ConnectivityStrategy, FallbackStrategy, RoutingContext
from routed_llm.testing import ScriptedLlm
from tests.conftest import collect, make_request, run_agent, texts

LONG_QUESTION = "Summarise this for me please. " * 200


class Verdict(BaseModel):
    verdict: str


class SchemaWithTools(ScriptedLlm):
    """A scripted model that can pair an output schema with tools."""

    @property
    def capabilities(self) -> LlmCapabilities:
        return LlmCapabilities(output_schema_and_tools=True)


def schema_and_tools_request():
    request = make_request("Judge this.")
    request.config.response_schema = Verdict
    request.config.tools = [
        types.Tool(function_declarations=[types.FunctionDeclaration(name="look_up", description="Looks up.")])
    ]
    return request


async def test_an_input_over_the_device_context_window_goes_to_the_cloud_without_trying_the_device():
    cloud = ScriptedLlm(model="cloud-model", script=["Here is the summary."])
    routed = RoutedLlm(
        models={ON_DEVICE: LlamaCppLlm(n_ctx=256), CLOUD: cloud}, router=FallbackStrategy([ON_DEVICE, CLOUD])
    )

    events, _ = await run_agent(LlmAgent(name="assistant", model=routed), LONG_QUESTION)

    assert texts(events) == ["Here is the summary."]
    record = events[-1].custom_metadata["routed_llm"]
    assert record["failed_keys"] == []
    assert "context window" in record["skipped"][ON_DEVICE]


async def test_offline_an_input_over_the_device_window_goes_to_the_cloud_even_if_its_circuit_is_open():
    health = HealthTracker(failure_threshold=1, cooldown=30.0, clock=lambda: 0.0)
    health.record_failure(CLOUD, ConnectionError("offline"), "transient")
    cloud = ScriptedLlm(model="cloud-model", script=["Here is the summary."])
    routed = RoutedLlm(
        models={ON_DEVICE: LlamaCppLlm(n_ctx=256), CLOUD: cloud},
        router=ConnectivityStrategy(is_online=lambda: False),
        health=health,
    )

    [response] = await collect(routed.generate_content_async(make_request(LONG_QUESTION)))

    assert response.custom_metadata["routed_llm"]["key"] == CLOUD


async def test_a_key_that_cannot_pair_an_output_schema_with_tools_is_skipped():
    plain = ScriptedLlm(model="plain-model", script=["never asked"])
    capable = SchemaWithTools(model="capable-model", script=['{"verdict": "fine"}'])
    routed = RoutedLlm(
        models={"plain": plain, "capable": capable}, router=FallbackStrategy(["plain", "capable"])
    )

    [response] = await collect(routed.generate_content_async(schema_and_tools_request()))

    record = response.custom_metadata["routed_llm"]
    assert record["key"] == "capable"
    assert "output schema with tools" in record["skipped"]["plain"]
    assert plain.calls == []


async def test_a_plain_router_picking_a_key_over_its_context_window_gets_a_routing_error():
    routed = RoutedLlm(models={ON_DEVICE: LlamaCppLlm(n_ctx=256)}, router=lambda *_: ON_DEVICE)

    with pytest.raises(RoutingError, match="context window") as raised:
        await collect(routed.generate_content_async(make_request(LONG_QUESTION)))

    assert raised.value.key == ON_DEVICE


def test_unavailable_reason_names_what_the_model_lacks():
    ctx = RoutingContext(schema_and_tools_request(), {"plain": ScriptedLlm(model="plain-model")})

    reason = ctx.unavailable_reason("plain")

    assert reason is not None
    assert "output schema with tools" in reason
    assert ctx.is_available("plain") is False


async def test_unavailable_reason_names_an_open_circuit():
    health = HealthTracker(failure_threshold=1, cooldown=30.0, clock=lambda: 0.0)
    health.record_failure("primary", ConnectionError("down"), "transient")
    reasons: list[str | None] = []

    def router(models, llm_request, error_context):
        reasons.append(RoutingContext(llm_request, models).unavailable_reason("primary"))
        return "backup"

    routed = RoutedLlm(
        models={"primary": ScriptedLlm(model="p"), "backup": ScriptedLlm(model="b", script=["ok"])},
        router=router,
        health=health,
    )

    await collect(routed.generate_content_async(make_request("hi")))

    assert reasons == ["its circuit is open, or its half-open trial is in flight"]


def test_the_device_model_declares_its_context_window():
    assert LlamaCppLlm(n_ctx=512).context_window == 512
