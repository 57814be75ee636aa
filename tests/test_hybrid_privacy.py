"""The hybrid demo's privacy rule keeps private prompts on the device.

The phrasings (``examples/hybrid/phrasings.py``) were written from the
categories the README promises to keep local (credentials, health, finance,
identity numbers) in English, Spanish, French and German, before the rule
was; they are not its keyword list. Public ones must still reach the cloud,
so the rule stays useful.
"""

from __future__ import annotations

import pytest
from google.adk.models.llm_request import LlmRequest
from google.genai import types

from examples.hybrid.phrasings import PRIVATE, PUBLIC
from examples.hybrid.privacy import privacy_rule
from routed_llm.strategies import ON_DEVICE, RoutingContext


def context(*, contents: list[types.Content], system_instruction: object = None) -> RoutingContext:
    config = types.GenerateContentConfig(system_instruction=system_instruction)
    return RoutingContext(request=LlmRequest(contents=contents, config=config), models={})


def user(*parts: types.Part) -> types.Content:
    return types.Content(role="user", parts=list(parts))


def asked(text: str) -> RoutingContext:
    return context(contents=[user(types.Part(text=text))])


def test_the_table_is_large_enough():
    assert len(PRIVATE) + len(PUBLIC) >= 40


@pytest.mark.parametrize("text", PRIVATE)
def test_a_private_prompt_stays_on_the_device(text):
    assert privacy_rule(asked(text)) == ON_DEVICE


@pytest.mark.parametrize("text", PUBLIC)
def test_a_public_prompt_is_left_to_the_next_rule(text):
    assert privacy_rule(asked(text)) == ""


@pytest.mark.parametrize("text", ["MY PASSWORD", "my pássword", "MEINE KRANKENAKTE", "mi diagnostico medico"])
def test_case_and_accents_do_not_matter(text):
    assert privacy_rule(asked(text)) == ON_DEVICE


def test_a_private_system_instruction_stays_on_the_device():
    ctx = context(
        contents=[user(types.Part(text="Summarise it."))],
        system_instruction="The user's salary is 85,000 EUR.",
    )

    assert privacy_rule(ctx) == ON_DEVICE


def test_a_private_list_form_system_instruction_stays_on_the_device():
    ctx = context(
        contents=[user(types.Part(text="Summarise it."))],
        system_instruction=["Be brief.", types.Part(text="Patient record: diagnosed with asthma.")],
    )

    assert privacy_rule(ctx) == ON_DEVICE


def test_an_earlier_private_turn_keeps_the_whole_conversation_on_the_device():
    ctx = context(
        contents=[
            user(types.Part(text="My password is hunter2.")),
            types.Content(role="model", parts=[types.Part(text="Noted.")]),
            user(types.Part(text="What is the capital of France?")),
        ]
    )

    assert privacy_rule(ctx) == ON_DEVICE


def test_a_private_function_response_stays_on_the_device():
    ctx = context(
        contents=[
            user(types.Part(text="What did the lookup find?")),
            types.Content(
                role="model",
                parts=[types.Part(function_call=types.FunctionCall(name="lookup_employee", args={"id": 7}))],
            ),
            user(
                types.Part(
                    function_response=types.FunctionResponse(
                        name="lookup_employee", response={"name": "Ada", "salary": 91000}
                    )
                )
            ),
        ]
    )

    assert privacy_rule(ctx) == ON_DEVICE


def test_a_private_function_call_stays_on_the_device():
    call = types.FunctionCall(name="send_form", args={"iban": "GB33BUKB20201555555555"})
    ctx = context(
        contents=[
            user(types.Part(text="Send it.")),
            types.Content(role="model", parts=[types.Part(function_call=call)]),
        ]
    )

    assert privacy_rule(ctx) == ON_DEVICE


def test_media_the_rule_cannot_read_stays_on_the_device():
    photo = types.Part(inline_data=types.Blob(mime_type="image/png", data=b"\x89PNG"))

    assert privacy_rule(context(contents=[user(types.Part(text="What does this say?"), photo)])) == ON_DEVICE


def test_media_a_tool_returned_stays_on_the_device():
    scan = types.Part.from_function_response(
        name="fetch_picture",
        response={},
        parts=[types.FunctionResponsePart.from_bytes(data=b"\x89PNG", mime_type="image/png")],
    )

    assert (
        privacy_rule(context(contents=[user(types.Part(text="Describe the picture.")), user(scan)]))
        == ON_DEVICE
    )


def test_a_public_conversation_with_tools_is_left_to_the_next_rule():
    ctx = context(
        contents=[
            user(types.Part(text="What's the weather in Paris?")),
            types.Content(
                role="model",
                parts=[
                    types.Part(function_call=types.FunctionCall(name="get_weather", args={"city": "Paris"}))
                ],
            ),
            user(
                types.Part(
                    function_response=types.FunctionResponse(
                        name="get_weather", response={"forecast": "sunny"}
                    )
                )
            ),
        ],
        system_instruction="You are a helpful assistant. Answer in one short sentence.",
    )

    assert privacy_rule(ctx) == ""
