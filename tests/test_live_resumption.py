"""A resumed live session reconnects to the model that opened it, as ADK's FallbackModel does."""

from __future__ import annotations

import gc
import weakref
from contextlib import asynccontextmanager

import pytest
from google.adk.models.llm_request import LlmRequest
from google.genai import types

from routed_llm import RoutedLlm
from routed_llm.testing import ScriptedLlm
from tests.conftest import collect, in_order, make_request, texts


def live_request(handle: str | None = None, *, resumable: bool = True) -> LlmRequest:
    request = make_request("hi")
    request.live_connect_config = types.LiveConnectConfig(
        session_resumption=types.SessionResumptionConfig(handle=handle) if resumable else None
    )
    return request


async def test_a_reconnect_with_a_handle_goes_to_the_key_that_opened_the_session():
    a = ScriptedLlm(model="model-a", script=["first", "resumed on a"])
    b = ScriptedLlm(model="model-b", script=["never"])
    order = ["a", "b"]
    llm = RoutedLlm(models={"a": a, "b": b}, router=in_order(order))
    request = live_request()
    async with llm.connect(request) as connection:
        await collect(connection.receive())
    order.reverse()  # The router would now pick b.
    request.live_connect_config.session_resumption.handle = "handle-from-a"

    async with llm.connect(request) as connection:
        responses = await collect(connection.receive())

    assert texts(responses) == ["resumed on a"]
    assert b.calls == []


async def test_a_reconnect_with_a_handle_does_not_ask_the_router():
    router = in_order(["a", "b"])
    llm = RoutedLlm(
        models={"a": ScriptedLlm(model="model-a", script=["1", "2"]), "b": ScriptedLlm(model="b")},
        router=router,
    )
    request = live_request()
    async with llm.connect(request):
        pass
    request.live_connect_config.session_resumption.handle = "handle-from-a"

    async with llm.connect(request):
        pass

    assert router.seen == [None]


class GoesDown(ScriptedLlm):
    """Connects until an error is put in ``down``, then raises it."""

    def __init__(self, *, model: str, down: list[BaseException]) -> None:
        super().__init__(model=model, script=["connected"])
        self._down = down

    @asynccontextmanager
    async def connect(self, llm_request):
        if self._down:
            raise self._down[0]
        async with super().connect(llm_request) as connection:
            yield connection


async def test_a_reconnect_whose_owner_fails_propagates_without_failover():
    error = ConnectionError("cannot reconnect")
    owner_is_down: list[BaseException] = []
    a = GoesDown(model="model-a", down=owner_is_down)
    b = ScriptedLlm(model="model-b", script=["never"])
    llm = RoutedLlm(models={"a": a, "b": b}, router=in_order(["a", "b"]))
    request = live_request()
    async with llm.connect(request):
        pass
    request.live_connect_config.session_resumption.handle = "handle-from-a"
    owner_is_down.append(error)

    with pytest.raises(ConnectionError) as raised:
        async with llm.connect(request):
            pass

    assert raised.value is error
    assert b.calls == []


async def test_with_nothing_remembered_the_model_name_on_the_request_finds_the_owner():
    b = ScriptedLlm(model="model-b", script=["resumed on b"])
    llm = RoutedLlm(models={"a": ScriptedLlm(model="model-a"), "b": b}, router=in_order(["a", "b"]))
    request = live_request("earlier-handle")
    request.model = "model-b"

    async with llm.connect(request) as connection:
        responses = await collect(connection.receive())

    assert texts(responses) == ["resumed on b"]


async def test_a_model_name_two_keys_share_identifies_no_one():
    llm = RoutedLlm(
        models={"east": ScriptedLlm(model="gemini"), "west": ScriptedLlm(model="gemini")},
        router=in_order(["east"]),
    )
    request = live_request("earlier-handle")
    request.model = "gemini"

    with pytest.raises(ValueError, match=r"Cannot resume a live session.*2 keys \('east', 'west'\) share it"):
        async with llm.connect(request):
            pass


async def test_a_model_name_no_key_serves_identifies_no_one():
    llm = RoutedLlm(models={"a": ScriptedLlm(model="model-a")}, router=in_order(["a"]))
    request = live_request("earlier-handle")
    request.model = "retired-model"

    with pytest.raises(ValueError, match=r"Cannot resume a live session.*no key serves it"):
        async with llm.connect(request):
            pass


async def test_a_fresh_run_carrying_a_handle_goes_to_the_routers_first_pick_without_failover():
    error = ConnectionError("refused")
    a = ScriptedLlm(model="model-a", connect_error=error)
    b = ScriptedLlm(model="model-b", script=["never"])
    llm = RoutedLlm(models={"a": a, "b": b}, router=in_order(["a", "b"]))
    request = live_request("handle-from-an-earlier-run")
    request.model = llm.model

    with pytest.raises(ConnectionError) as raised:
        async with llm.connect(request):
            pass

    assert raised.value is error
    assert b.calls == []


async def test_a_first_connection_with_resumption_enabled_but_no_handle_still_fails_over():
    a = ScriptedLlm(model="model-a", connect_error=ConnectionError("refused"))
    llm = RoutedLlm(
        models={"a": a, "b": ScriptedLlm(model="model-b", script=["live b"])}, router=in_order(["a", "b"])
    )

    async with llm.connect(live_request()) as connection:
        responses = await collect(connection.receive())

    assert texts(responses) == ["live b"]


async def test_finished_sessions_are_not_kept_alive():
    llm = RoutedLlm(models={"a": ScriptedLlm(model="model-a", script=["1"])}, router=in_order(["a"]))
    request = live_request()
    async with llm.connect(request):
        pass
    gone = weakref.ref(request)

    del request
    gc.collect()

    assert gone() is None


async def test_an_empty_handle_is_no_resumption_and_fails_over():
    a = ScriptedLlm(model="model-a", connect_error=ConnectionError("refused"))
    llm = RoutedLlm(
        models={"a": a, "b": ScriptedLlm(model="model-b", script=["live b"])}, router=in_order(["a", "b"])
    )

    async with llm.connect(live_request("")) as connection:
        responses = await collect(connection.receive())

    assert texts(responses) == ["live b"]
