"""Adversarial review of issue 20: judges under the deadline, classifier gates, on-device output."""

from __future__ import annotations

import copy
import json

import pytest
from google.adk.agents import LlmAgent
from google.adk.models import Gemini
from google.adk.models.llm_request import LlmRequest
from google.adk.models.llm_response import LlmResponse
from google.genai import types
from pydantic import BaseModel, Field

from routed_llm import HealthTracker, RoutedAgent, RoutedLlm, hybrid_model_on_device_cloud
from routed_llm.ondevice import LlamaCppLlm
from routed_llm.strategies import CLOUD, ON_DEVICE, FallbackStrategy, WithFallback, request_text
from routed_llm.testing import ScriptedLlm, Stream
from tests.conftest import collect, make_request, make_runner, texts
from tests.fake_servers import FakeGemini, Finish
from tests.test_classifier_strategy import pii_detector, privacy_gate, run_with_plugin
from tests.test_provider_gemini import genai_transport  # noqa: F401  (autouse: the transport under test)

SCAN = b"\x89PNG\r\n\x1a\n scanned passport"


def fetch_scanned_id() -> types.Part:
    """Returns the user's scanned ID card (a tool for the tests): an image, no text."""
    return types.Part.from_bytes(data=SCAN, mime_type="image/png")


def calls_the_scanner_then_answers(name: str) -> ScriptedLlm:
    """A model that calls ``fetch_scanned_id`` once, then answers."""

    def reply(request: LlmRequest) -> types.Part | str:
        if any(part.function_response for content in request.contents for part in content.parts or ()):
            return f"{name} read the scan"
        return types.Part(function_call=types.FunctionCall(name="fetch_scanned_id", args={}))

    return ScriptedLlm(model=name, script=reply)


def carries_the_scan(request: LlmRequest) -> bool:
    return any(
        media.inline_data is not None and media.inline_data.data == SCAN
        for content in request.contents
        for part in content.parts or ()
        if part.function_response is not None
        for media in part.function_response.parts or ()
    )


async def test_an_image_a_tool_returns_goes_where_private_requests_go_never_to_the_cloud():
    device = calls_the_scanner_then_answers(ON_DEVICE)
    cloud = calls_the_scanner_then_answers(CLOUD)
    llm = hybrid_model_on_device_cloud(
        on_device=device,
        cloud=cloud,
        strategy=WithFallback(privacy_gate(pii_detector()), fallback_order=[CLOUD, ON_DEVICE]),
    )
    agent = LlmAgent(name="assistant", model=llm, tools=[fetch_scanned_id])

    await run_with_plugin(agent, "Please check my ID card.")

    assert [carries_the_scan(call) for call in cloud.calls] == [False]
    assert [carries_the_scan(call) for call in device.calls] == [True]


# A privacy gate between agents reads the conversation the agent will be given.


def answers_with(name: str) -> ScriptedLlm:
    return ScriptedLlm(model=f"{name}-model", script=lambda request: f"{name} answer")


def shows_a_social_security_number(request: LlmRequest) -> bool:
    return "123-45-6789" in request_text(request)


async def test_a_private_earlier_turn_keeps_the_next_invocation_between_agents_off_the_cloud():
    device_model, cloud_model = answers_with(ON_DEVICE), answers_with(CLOUD)
    root = RoutedAgent(
        name="assistant",
        agents={
            ON_DEVICE: LlmAgent(name="device_agent", model=device_model),
            CLOUD: LlmAgent(name="cloud_agent", model=cloud_model),
        },
        router=WithFallback(privacy_gate(pii_detector()), fallback_order=[CLOUD, ON_DEVICE]),
    )
    runner = make_runner(root)
    session = await runner.session_service.create_session(app_name="test_app", user_id="user")

    for question in ("My SSN is 123-45-6789; keep it handy.", "What is the capital of France?"):
        message = types.Content(role="user", parts=[types.Part(text=question)])
        async for _ in runner.run_async(user_id="user", session_id=session.id, new_message=message):
            pass

    assert [shows_a_social_security_number(call) for call in cloud_model.calls] == []
    assert [shows_a_social_security_number(call) for call in device_model.calls] == [True, True]


# Structured output on the device: schemas pydantic writes for ordinary models.


class Located(BaseModel):
    """A place and its coordinates: pydantic writes a tuple as prefixItems with minItems and maxItems."""

    name: str
    coordinates: tuple[float, float]


class Topic(BaseModel):
    """A tree: pydantic writes a recursive model as a '$ref' at the root, into '$defs'."""

    name: str = Field(max_length=12)
    subtopics: list[Topic] = []


@pytest.fixture(scope="module")
def device() -> LlamaCppLlm:
    return LlamaCppLlm(n_ctx=512)


def asked_for(schema: type[BaseModel], question: str) -> LlmRequest:
    asked = LlmRequest(
        model="smollm2-135m-instruct",
        contents=[types.Content(role="user", parts=[types.Part(text=question)])],
        config=types.GenerateContentConfig(temperature=0.0, max_output_tokens=64),
    )
    asked.set_output_schema(schema)
    return asked


@pytest.mark.parametrize(
    ("schema", "question"),
    [(Located, "Where is Paris?"), (Topic, "Name one topic.")],
    ids=["tuple", "recursive"],
)
async def test_a_tuple_or_a_recursive_model_holds_the_device_answer_to_valid_json(device, schema, question):
    [response] = await collect(device.generate_content_async(asked_for(schema, question)))

    assert response.finish_reason == types.FinishReason.STOP
    assert schema.model_validate_json(response.content.parts[0].text)


CITY = {
    "$defs": {"City": {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}},
    "type": "object",
    "properties": {"city": {"$ref": "#/$defs/City"}},
    "required": ["city"],
}


async def test_an_agents_json_schema_with_refs_holds_every_turn_on_the_device_and_is_left_as_given(device):
    schema = copy.deepcopy(CITY)
    agent = LlmAgent(
        name="geographer",
        model=device,
        instruction="Answer in JSON.",
        generate_content_config=types.GenerateContentConfig(
            temperature=0.0,
            max_output_tokens=32,
            response_mime_type="application/json",
            response_json_schema=schema,
        ),
    )
    runner = make_runner(agent)
    session = await runner.session_service.create_session(app_name="test_app", user_id="user")

    answers = []
    for question in ("Name a city in France.", "Name a city in Japan."):
        message = types.Content(role="user", parts=[types.Part(text=question)])
        events = [
            event
            async for event in runner.run_async(user_id="user", session_id=session.id, new_message=message)
        ]
        answers.append(json.loads(events[-1].content.parts[0].text))

    assert [sorted(answer) for answer in answers] == [["city"], ["city"]]
    assert schema == CITY


# An answer with nothing in it, from the real Gemini client.


@pytest.fixture
def gemini_server():
    fake = FakeGemini().start()
    yield fake
    fake.stop()


def unsure_device_then_gemini(server: FakeGemini, **options) -> RoutedLlm:
    guess = LlmResponse(content=types.Content(role="model", parts=[types.Part(text="a guess")]))
    return RoutedLlm(
        models={
            "device": ScriptedLlm(model="device", script=[guess]),
            "cloud": Gemini(
                model="gemini-cloud", base_url=server.url, retry_options=types.HttpRetryOptions(attempts=1)
            ),
        },
        router=FallbackStrategy(["device", "cloud"]),
        accept={"device": lambda key, response: "unsure"},
        **options,
    )


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "sse"])
async def test_an_unsure_answer_is_output_rather_than_a_cloud_answer_with_nothing_in_it(
    gemini_server, stream
):
    gemini_server.script("gemini-cloud", Finish("STOP"))  # HTTP 200, finishReason STOP, no content.
    llm = unsure_device_then_gemini(gemini_server)

    responses = await collect(llm.generate_content_async(make_request("hi"), stream=stream))

    assert texts(responses) == ["a guess"]
    assert responses[-1].custom_metadata["routed_llm"]["errors"] == {
        "device": "ResponseRejected",
        "cloud": "ResponseRejected",
    }


async def test_an_answer_with_nothing_in_it_counts_against_the_key_never_as_a_success(gemini_server):
    gemini_server.script("gemini-cloud", Finish("STOP"))
    health = HealthTracker(failure_threshold=1, cooldown=30.0, clock=lambda: 0.0)
    llm = unsure_device_then_gemini(gemini_server, health=health)

    await collect(llm.generate_content_async(make_request("hi")))

    assert not health.is_available("cloud")


async def test_an_answer_with_nothing_in_it_is_output_marked_rejected_when_no_other_model_serves(
    gemini_server,
):
    gemini_server.script("gemini-cloud", Finish("STOP"))
    llm = RoutedLlm(
        models={
            "cloud": Gemini(
                model="gemini-cloud",
                base_url=gemini_server.url,
                retry_options=types.HttpRetryOptions(attempts=1),
            )
        },
        router=FallbackStrategy(["cloud"]),
    )

    [response] = await collect(llm.generate_content_async(make_request("hi")))

    assert response.content is None
    assert (
        response.custom_metadata["routed_llm"]["rejected"] == "the model answered with nothing in its answer"
    )


async def test_an_answer_that_begins_with_nothing_is_output_whole_once_it_ends():
    llm = RoutedLlm(
        models={"cloud": ScriptedLlm(model="cloud", script=[Stream(["", "hello"])])},
        router=FallbackStrategy(["cloud"]),
    )

    responses = await collect(llm.generate_content_async(make_request("hi"), stream=True))

    assert texts(responses) == ["", "hello", "hello"]
    assert {response.custom_metadata["routed_llm"]["key"] for response in responses} == {"cloud"}
