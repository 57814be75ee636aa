"""Rollback is exact: after a failed attempt the next model sees the request as the caller built it.

The snapshot records only the fields that are set (and those whose default is
mutable), so these tests edit what that could miss: fields set only after the
snapshot, unset defaults edited in place, private attributes, nested parts,
and values written past pydantic.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from google.adk.models.llm_request import LlmRequest
from google.genai import types

from routed_llm import RoutedLlm
from routed_llm.testing import ScriptedLlm
from tests.conftest import collect, in_order, make_request, weather_round_trip


def state(request: LlmRequest) -> tuple[Any, ...]:
    """Everything observable about a request but its model name (each attempt sets its own)."""
    return (
        request.model_dump(exclude={"model"}),
        request.model_dump(exclude={"model"}, exclude_unset=True),
        repr(request.__pydantic_private__),
    )


async def fail_over(request: LlmRequest, *edits: Callable[[LlmRequest], None]) -> list[Any]:
    """Runs ``request`` through one failing model per edit, then one that answers.

    Returns:
        The state of the request as each model after the first received it.
    """
    seen: list[Any] = []

    def edit_then_fail(edit: Callable[[LlmRequest], None]) -> Callable[[LlmRequest], Exception]:
        def step(llm_request: LlmRequest) -> Exception:
            seen.append(state(llm_request))
            edit(llm_request)
            return ConnectionError("failed after editing")

        return step

    def answer(llm_request: LlmRequest) -> str:
        seen.append(state(llm_request))
        return "ok"

    models = {
        f"edits{index}": ScriptedLlm(model=f"m{index}", script=edit_then_fail(edit))
        for index, edit in enumerate(edits)
    }
    models["answers"] = ScriptedLlm(model="answers", script=answer)
    llm = RoutedLlm(models=models, router=in_order(list(models)))
    await collect(llm.generate_content_async(request))
    return seen[1:]


async def test_fields_set_only_by_a_failed_model_are_unset_again():
    request = LlmRequest(
        model="caller",
        contents=[types.Content(parts=[types.Part(text="question")])],
        config=types.GenerateContentConfig(temperature=0.5),
    )
    expected = state(request)

    def set_new_fields(llm_request: LlmRequest) -> None:
        llm_request.contents[0].role = "user"
        llm_request.contents[0].parts[0].thought = True
        llm_request.config.top_k = 3
        llm_request.previous_interaction_id = "interaction-1"

    assert await fail_over(request, set_new_fields) == [expected]


async def test_an_unset_default_filled_in_place_is_emptied_again():
    request = LlmRequest()
    request.contents.append(types.Content(role="user", parts=[types.Part(text="question")]))
    expected = state(request)

    def fill_defaults(llm_request: LlmRequest) -> None:
        llm_request.contents.append(types.Content(role="user", parts=[types.Part(text="injected")]))
        llm_request.config.labels = {"edited": "yes"}
        llm_request.live_connect_config.response_modalities = [types.Modality.AUDIO]

    assert await fail_over(request, fill_defaults) == [expected]


async def test_private_attributes_replaced_or_edited_are_restored():
    request = make_request("question")
    request._dynamic_instructions.append("original")
    original = request._dynamic_instructions
    expected = state(request)

    def edit_private(llm_request: LlmRequest) -> None:
        llm_request._dynamic_instructions.append("appended")
        llm_request._dynamic_instructions = ["replaced"]
        llm_request._is_managed_agent = True

    assert await fail_over(request, edit_private) == [expected]
    assert request._dynamic_instructions is original


async def test_nested_parts_edited_in_place_are_restored():
    request = make_request("question")
    request.contents += weather_round_trip()
    request.contents.append(
        types.Content(
            role="user", parts=[types.Part(inline_data=types.Blob(mime_type="image/png", data=b"\x89PNG"))]
        )
    )
    request.config.system_instruction = types.Content(parts=[types.Part(text="Be brief.")])
    expected = state(request)

    def edit_nested(llm_request: LlmRequest) -> None:
        call, answer, image = (content.parts[0] for content in llm_request.contents[1:])
        call.function_call.args["city"] = "Rome"
        answer.function_response.response["forecast"] = "rain"
        image.inline_data.data = b"edited"
        llm_request.config.system_instruction.parts[0].text = "Be verbose."

    assert await fail_over(request, edit_nested) == [expected]


async def test_parts_replaced_in_their_list_are_put_back_as_the_same_objects():
    request = make_request("question", "answer")
    parts = [content.parts[0] for content in request.contents]

    def replace_parts(llm_request: LlmRequest) -> None:
        llm_request.contents[0].parts[0] = types.Part(text="other")
        llm_request.contents[1].parts = [types.Part(text="new list")]

    await fail_over(request, replace_parts)

    assert [content.parts[0] for content in request.contents] == parts
    assert all(content.parts[0] is part for content, part in zip(request.contents, parts, strict=True))


async def test_a_part_shared_by_two_contents_is_restored():
    shared = types.Part(text="shared")
    request = LlmRequest(
        contents=[types.Content(role="user", parts=[shared]), types.Content(role="model", parts=[shared])]
    )
    expected = state(request)

    def edit_shared(llm_request: LlmRequest) -> None:
        shared.text = "edited"
        shared.thought = True

    assert await fail_over(request, edit_shared) == [expected]


async def test_an_unset_field_written_past_pydantic_keeps_its_value():
    request = make_request("question")
    part = request.contents[0].parts[0]
    object.__setattr__(part, "thought", True)  # Not in model_fields_set, yet not None.
    expected = state(request)

    def overwrite(llm_request: LlmRequest) -> None:
        llm_request.contents[0].parts[0].thought = False

    assert await fail_over(request, overwrite) == [expected]
    assert part.thought is True
    assert "thought" not in part.model_fields_set


async def test_an_attribute_added_past_pydantic_keeps_its_value():
    request = make_request("question")
    part = request.contents[0].parts[0]
    object.__setattr__(part, "annotation", {"source": "cache"})  # Not a field at all.

    def edit(llm_request: LlmRequest) -> None:
        llm_request.contents[0].parts[0].__dict__["annotation"]["source"] = "edited"

    await fail_over(request, edit)

    assert part.__dict__["annotation"] == {"source": "cache"}


async def test_every_failover_starts_from_the_callers_request():
    request = make_request("question", "answer", "follow-up")
    expected = state(request)

    def first_edit(llm_request: LlmRequest) -> None:
        llm_request.contents[0].parts[0].text = "first edit"
        llm_request.contents.pop()

    def second_edit(llm_request: LlmRequest) -> None:
        llm_request.contents[1].parts.append(types.Part(text="second edit"))
        llm_request.config.temperature = 1.0

    assert await fail_over(request, first_edit, second_edit) == [expected, expected]
