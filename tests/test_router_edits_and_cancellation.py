"""What the router edits belongs to the attempt it picks; a cancelled call never fails over."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import pytest
from google.adk.models.base_llm import BaseLlm
from google.adk.models.llm_request import LlmRequest
from google.adk.models.llm_response import LlmResponse
from pydantic import ConfigDict

from routed_llm import RoutedLlm
from routed_llm.testing import ScriptedLlm
from tests.conftest import collect, make_request, texts

CARD = "4111 1111 1111 1111"


def redact(llm_request: LlmRequest) -> None:
    for content in llm_request.contents:
        for part in content.parts or ():
            if part.text:
                part.text = part.text.replace(CARD, "[card]")


def first_text(call) -> str:
    return call.contents[0].parts[0].text


async def test_a_redaction_made_on_the_first_pick_reaches_that_attempt():
    def router(models, llm_request, error_context):
        redact(llm_request)
        return "cloud"

    cloud = ScriptedLlm(model="cloud", script=["ok"])
    llm = RoutedLlm(models={"device": ScriptedLlm(model="device"), "cloud": cloud}, router=router)

    await collect(llm.generate_content_async(make_request(f"my card is {CARD}")))

    assert first_text(cloud.calls[0]) == "my card is [card]"


async def test_a_redaction_made_on_failover_reaches_the_fallback_attempt():
    def router(models, llm_request, error_context):
        if error_context is None:
            return "device"
        redact(llm_request)
        return "cloud"

    cloud = ScriptedLlm(model="cloud", script=["ok"])
    device = ScriptedLlm(model="device", script=[ConnectionError("device down")])
    llm = RoutedLlm(models={"device": device, "cloud": cloud}, router=router)

    await collect(llm.generate_content_async(make_request(f"my card is {CARD}")))

    assert first_text(cloud.calls[0]) == "my card is [card]"


async def test_an_edit_made_on_the_first_pick_is_undone_before_the_router_is_asked_again():
    seen_on_failover: list[str] = []

    def router(models, llm_request, error_context):
        if error_context is None:
            llm_request.contents[0].parts[0].text += " (answer offline)"
            return "device"
        seen_on_failover.append(llm_request.contents[0].parts[0].text)
        return "cloud"

    cloud = ScriptedLlm(model="cloud", script=["ok"])
    device = ScriptedLlm(model="device", script=[ConnectionError("device down")])
    llm = RoutedLlm(models={"device": device, "cloud": cloud}, router=router)

    await collect(llm.generate_content_async(make_request("question")))

    assert seen_on_failover == ["question"]
    assert first_text(cloud.calls[0]) == "question"


class _Hangs(BaseLlm):
    """Edits the request, says it started, then waits for an event nobody sets.

    Like some SDKs, it reports its cancellation as an ordinary error.
    """

    started: asyncio.Event
    never: asyncio.Event

    model_config = ConfigDict(arbitrary_types_allowed=True)

    async def generate_content_async(
        self, llm_request: LlmRequest, stream: bool = False
    ) -> AsyncGenerator[LlmResponse, None]:
        llm_request.contents[0].parts[0].text = "EDITED BY THE MODEL"
        self.started.set()
        try:
            await self.never.wait()
        except asyncio.CancelledError as cancelled:
            raise ConnectionError("request aborted") from cancelled
        yield LlmResponse()  # pragma: no cover


def hanging() -> _Hangs:
    return _Hangs(model="primary", started=asyncio.Event(), never=asyncio.Event())


async def test_a_timeout_around_the_call_raises_timeout_error_and_never_fails_over():
    primary, backup = hanging(), ScriptedLlm(model="backup", script=["from backup"])
    llm = RoutedLlm(models={"primary": primary, "backup": backup}, router=_in_order)

    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0):
            await collect(llm.generate_content_async(make_request()))

    assert backup.calls == []


async def test_cancelling_the_call_while_the_model_runs_never_fails_over():
    primary, backup = hanging(), ScriptedLlm(model="backup", script=["from backup"])
    llm = RoutedLlm(models={"primary": primary, "backup": backup}, router=_in_order)
    task = asyncio.create_task(collect(llm.generate_content_async(make_request())))
    await primary.started.wait()

    task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await task
    assert backup.calls == []


async def test_the_cancellation_keeps_the_models_error_as_its_cause():
    primary = hanging()
    llm = RoutedLlm(models={"primary": primary, "backup": ScriptedLlm(model="backup")}, router=_in_order)
    task = asyncio.create_task(collect(llm.generate_content_async(make_request())))
    await primary.started.wait()

    task.cancel()

    with pytest.raises(asyncio.CancelledError) as raised:
        await task
    assert isinstance(raised.value.__cause__, ConnectionError)


async def test_a_cancelled_call_leaves_the_callers_request_rolled_back():
    primary = hanging()
    llm = RoutedLlm(models={"primary": primary, "backup": ScriptedLlm(model="backup")}, router=_in_order)
    request = make_request("question")
    task = asyncio.create_task(collect(llm.generate_content_async(request)))
    await primary.started.wait()

    task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await task
    assert request.contents[0].parts[0].text == "question"


class _EditsThenFails(BaseLlm):
    """Edits the request in place, then fails before any output."""

    async def generate_content_async(
        self, llm_request: LlmRequest, stream: bool = False
    ) -> AsyncGenerator[LlmResponse, None]:
        llm_request.contents[0].parts[0].text = "EDITED BY THE MODEL"
        raise ConnectionError("down")
        yield LlmResponse()  # pragma: no cover


async def test_a_cancel_while_an_async_router_runs_after_a_failure_leaves_the_request_rolled_back():
    asked, never = asyncio.Event(), asyncio.Event()

    async def router(models, llm_request, error_context):
        if error_context is None:
            return "primary"
        asked.set()
        await never.wait()
        return "backup"  # pragma: no cover

    llm = RoutedLlm(
        models={"primary": _EditsThenFails(model="primary"), "backup": ScriptedLlm(model="backup")},
        router=router,
    )
    request = make_request("question")
    task = asyncio.create_task(collect(llm.generate_content_async(request)))
    await asked.wait()

    task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await task
    assert request.contents[0].parts[0].text == "question"


async def test_a_cancel_while_an_async_hook_runs_after_the_router_edited_leaves_the_request_rolled_back():
    hooked, never = asyncio.Event(), asyncio.Event()

    def router(models, llm_request, error_context):
        redact(llm_request)
        return "cloud"

    async def on_route(event) -> None:
        hooked.set()
        await never.wait()

    llm = RoutedLlm(
        models={"device": ScriptedLlm(model="device"), "cloud": ScriptedLlm(model="cloud")},
        router=router,
        on_route=on_route,
    )
    request = make_request(f"my card is {CARD}")
    task = asyncio.create_task(collect(llm.generate_content_async(request)))
    await hooked.wait()

    task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await task
    assert request.contents[0].parts[0].text == f"my card is {CARD}"


async def test_an_answered_call_keeps_the_serving_attempts_request():
    def router(models, llm_request, error_context):
        redact(llm_request)
        return "cloud"

    llm = RoutedLlm(
        models={"device": ScriptedLlm(model="device"), "cloud": ScriptedLlm(model="cloud", script=["ok"])},
        router=router,
    )
    request = make_request(f"my card is {CARD}")

    responses = await collect(llm.generate_content_async(request))

    assert texts(responses) == ["ok"]
    assert request.contents[0].parts[0].text == "my card is [card]"


def _in_order(models, llm_request, error_context):
    if error_context is None:
        return "primary"
    return None if "backup" in error_context.failed_keys else "backup"


async def test_a_model_whose_task_group_failed_is_failed_over_not_taken_for_a_cancellation():
    class UsesTaskGroup(BaseLlm):
        async def generate_content_async(self, llm_request, stream=False):
            async def fails() -> None:
                raise ConnectionError("down")

            async with asyncio.TaskGroup() as group:
                group.create_task(fails())
            yield LlmResponse()  # pragma: no cover

    llm = RoutedLlm(
        models={
            "primary": UsesTaskGroup(model="p"),
            "backup": ScriptedLlm(model="b", script=["from backup"]),
        },
        router=_in_order,
    )

    assert texts(await collect(llm.generate_content_async(make_request()))) == ["from backup"]


async def test_an_unanswered_call_on_a_single_model_leaves_the_request_rolled_back():
    llm = RoutedLlm(
        models={"primary": _EditsThenFails(model="primary")},
        router=lambda models, request, error_context: None if error_context else "primary",
    )
    request = make_request("question")

    with pytest.raises(ConnectionError):
        await collect(llm.generate_content_async(request))

    assert request.contents[0].parts[0].text == "question"
