"""The route record: every response carries a copy of its route; the delegate's objects are never changed."""

from __future__ import annotations

from google.adk.models.llm_response import LlmResponse
from google.genai import types

from routed_llm import RoutedLlm, annotate_route
from routed_llm.testing import ScriptedLlm
from tests.conftest import collect, make_request


def canned() -> LlmResponse:
    return LlmResponse(content=types.Content(role="model", parts=[types.Part(text="cached answer")]))


async def test_the_delegates_response_object_is_not_changed():
    response = canned()
    llm = RoutedLlm(models=[ScriptedLlm(model="a", script=[response])], router=lambda *_: "a")

    [routed] = await collect(llm.generate_content_async(make_request()))

    assert routed.custom_metadata["routed_llm"]["key"] == "a"
    assert response.custom_metadata is None


async def test_a_response_yielded_twice_carries_no_earlier_route_under_inner():
    response = canned()
    llm = RoutedLlm(models=[ScriptedLlm(model="a", script=[response, response])], router=lambda *_: "a")

    await collect(llm.generate_content_async(make_request()))
    [second] = await collect(llm.generate_content_async(make_request()))

    assert "inner" not in second.custom_metadata["routed_llm"]


async def test_a_shared_cached_response_never_leaks_one_callers_route_into_anothers():
    shared = canned()
    llm = RoutedLlm(models=[ScriptedLlm(model="a", script=lambda request: shared)], router=_annotating_router)

    [alice] = await collect(llm.generate_content_async(make_request("I am alice")))
    [bob] = await collect(llm.generate_content_async(make_request("I am bob")))

    assert alice.custom_metadata["routed_llm"]["user"] == "alice"
    assert bob.custom_metadata["routed_llm"]["user"] == "bob"
    assert "inner" not in bob.custom_metadata["routed_llm"]


def _annotating_router(models, llm_request, error_context):
    annotate_route(user=llm_request.contents[0].parts[0].text.split()[-1])
    return "a"


async def test_route_records_do_not_nest_over_many_calls_of_a_canned_response():
    shared = canned()
    llm = RoutedLlm(models=[ScriptedLlm(model="a", script=lambda request: shared)], router=lambda *_: "a")

    for _ in range(300):
        [last] = await collect(llm.generate_content_async(make_request()))

    assert "inner" not in last.custom_metadata["routed_llm"]
    assert last.model_dump_json()


async def test_a_genuinely_nested_routed_llm_keeps_its_route_under_inner():
    inner = RoutedLlm(models=[ScriptedLlm(model="leaf", script=[canned()])], router=lambda *_: "leaf")
    outer = RoutedLlm(models={"nested": inner}, router=lambda *_: "nested")

    [response] = await collect(outer.generate_content_async(make_request()))

    record = response.custom_metadata["routed_llm"]
    assert (record["key"], record["inner"]["key"]) == ("nested", "leaf")
    assert "inner" not in record["inner"]


async def test_live_responses_carry_the_route_record():
    llm = RoutedLlm(
        models=[ScriptedLlm(model="a"), ScriptedLlm(model="b", script=["live b"])],
        router=_live_router,
    )

    async with llm.connect(make_request()) as connection:
        responses = await collect(connection.receive())

    record = responses[0].custom_metadata["routed_llm"]
    assert (record["key"], record["arm"]) == ("b", "treatment")


def _live_router(models, llm_request, error_context):
    annotate_route(arm="treatment")
    return "b"


async def test_live_responses_are_stamped_copies_not_the_models_own_objects():
    response = canned()
    llm = RoutedLlm(models=[ScriptedLlm(model="a", script=[response])], router=lambda *_: "a")

    async with llm.connect(make_request()) as connection:
        await collect(connection.receive())

    assert response.custom_metadata is None


async def test_live_connection_passes_sends_through_to_the_models_connection():
    sent: list[types.Content] = []
    model = ScriptedLlm(model="a", script=["ok"])
    llm = RoutedLlm(models=[model], router=lambda *_: "a")

    async with llm.connect(make_request()) as connection:
        original = connection.connection
        original.send_content = _recording(sent)  # type: ignore[method-assign]
        await connection.send_content(types.Content(role="user", parts=[types.Part(text="hi")]))

    assert [content.parts[0].text for content in sent] == ["hi"]


def _recording(sent: list[types.Content]):
    async def send_content(content: types.Content) -> None:
        sent.append(content)

    return send_content
