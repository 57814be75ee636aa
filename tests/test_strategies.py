"""Each strategy's behaviour, called the way RoutedLlm calls a router."""

from __future__ import annotations

from types import MappingProxyType

import pytest
from google.adk.models.llm_request import LlmRequest
from google.genai import types

from routed_llm import ErrorContext, PermanentModelError, RoutedLlm
from routed_llm.strategies import (
    CLOUD,
    ON_DEVICE,
    PREFER_IN_CLOUD,
    PREFER_ON_DEVICE,
    TOKENS_PER_MESSAGE,
    ConnectivityStrategy,
    FallbackStrategy,
    FirstMatch,
    InputSizeStrategy,
    PreRoutingStrategy,
    RoutingContext,
    Strategy,
    WithFallback,
    estimate_tokens,
    request_text,
)
from routed_llm.testing import ScriptedLlm
from tests.conftest import make_request, weather_round_trip

MODELS = MappingProxyType({key: ScriptedLlm(model=key) for key in ("a", "b", "c", ON_DEVICE, CLOUD)})


def failed(*keys: str, error: BaseException | None = None) -> ErrorContext:
    error = error or ConnectionError("down")
    return ErrorContext(
        failed_keys=frozenset(keys), last_error=error, errors=MappingProxyType(dict.fromkeys(keys, error))
    )


async def route(strategy, context: ErrorContext | None = None, request=None) -> str | None:
    return await strategy(MODELS, request or make_request(), context)


class Fixed(Strategy):
    def __init__(self, key: str | None) -> None:
        self.key = key

    def decide(self, ctx):
        return self.key


def test_hybrid_key_constants_and_orders():
    assert (ON_DEVICE, CLOUD) == ("on_device", "cloud")
    assert PREFER_ON_DEVICE == (ON_DEVICE, CLOUD)
    assert PREFER_IN_CLOUD == (CLOUD, ON_DEVICE)


async def test_pre_routing_returns_the_functions_key_on_the_first_pick():
    assert await route(PreRoutingStrategy(lambda ctx: "b")) == "b"


async def test_pre_routing_accepts_an_async_function():
    async def choose(ctx):
        return "c"

    assert await route(PreRoutingStrategy(choose)) == "c"


@pytest.mark.parametrize("no_decision", ["", None])
async def test_pre_routing_empty_string_or_none_is_no_decision(no_decision):
    assert await route(PreRoutingStrategy(lambda ctx: no_decision)) is None


async def test_pre_routing_makes_no_decision_after_a_failure():
    assert await route(PreRoutingStrategy(lambda ctx: "b"), failed("b")) is None


async def test_fallback_strategy_first_picks_the_head_of_the_order():
    assert await route(FallbackStrategy(["b", "a"])) == "b"


async def test_fallback_strategy_moves_to_the_next_key_not_yet_failed():
    assert await route(FallbackStrategy(["a", "b", "c"]), failed("a", "b")) == "c"


async def test_fallback_strategy_stops_when_the_order_is_exhausted():
    assert await route(FallbackStrategy(["a", "b"]), failed("a", "b")) is None


async def test_fallback_strategy_stops_on_a_permanent_error():
    assert await route(FallbackStrategy(["a", "b"]), failed("a", error=PermanentModelError())) is None


async def test_fallback_strategy_uses_an_is_transient_override():
    strategy = FallbackStrategy(["a", "b"], is_transient=lambda error: isinstance(error, KeyError))

    assert await route(strategy, failed("a", error=KeyError())) == "b"
    assert await route(strategy, failed("a", error=ConnectionError())) is None


@pytest.mark.parametrize(("online", "expected"), [(True, CLOUD), (False, ON_DEVICE)])
async def test_connectivity_picks_by_network_state(online, expected):
    assert await route(ConnectivityStrategy(is_online=lambda: online)) == expected


async def test_connectivity_accepts_async_is_online_and_custom_keys():
    async def is_online() -> bool:
        return False

    assert await route(ConnectivityStrategy(is_online=is_online, online="a", offline="b")) == "b"


async def test_connectivity_makes_no_decision_after_a_failure():
    assert await route(ConnectivityStrategy(is_online=lambda: True), failed(CLOUD)) is None


@pytest.mark.parametrize(("text", "expected"), [("x" * 10, ON_DEVICE), ("x" * 11, CLOUD)])
async def test_input_size_routes_by_characters_at_most_max_chars_small(text, expected):
    assert await route(InputSizeStrategy(max_chars=10), request=make_request(text)) == expected


async def test_input_size_counts_every_turn_of_the_contents():
    request = make_request("x" * 6, "y" * 6)  # 6 + newline + 6 = 13 characters.

    assert await route(InputSizeStrategy(max_chars=12), request=request) == CLOUD


async def test_input_size_counts_the_system_instruction_unless_told_not_to():
    request = make_request("x" * 5)
    request.config.system_instruction = "s" * 20

    assert await route(InputSizeStrategy(max_chars=10), request=request) == CLOUD
    assert (
        await route(InputSizeStrategy(max_chars=10, count_system_instruction=False), request=request)
        == ON_DEVICE
    )


async def test_input_size_counts_a_list_form_system_instruction():
    request = make_request("x" * 5)
    request.config.system_instruction = ["s" * 10, types.Part(text="t" * 10)]

    assert await route(InputSizeStrategy(max_chars=20), request=request) == CLOUD


async def test_input_size_counts_function_calls_and_responses():
    request = make_request("weather?")
    request.contents += weather_round_trip()

    assert await route(InputSizeStrategy(max_chars=20), request=request) == CLOUD
    assert await route(InputSizeStrategy(max_tokens=12), request=request) == CLOUD


async def test_input_size_by_tokens_gives_the_counter_the_request():
    seen = []

    def count(request):
        seen.append(request)
        return len(request_text(request).split())

    strategy = InputSizeStrategy(max_tokens=3, count_tokens=count)

    assert await route(strategy, request=make_request("one two three")) == ON_DEVICE
    assert await route(strategy, request=make_request("one two three four")) == CLOUD
    assert all(isinstance(request, LlmRequest) for request in seen)


async def test_input_size_hides_the_system_instruction_from_the_counter_when_told_to():
    request = make_request("one two")
    request.config.system_instruction = "three four"
    strategy = InputSizeStrategy(
        max_tokens=2, count_tokens=lambda r: len(request_text(r).split()), count_system_instruction=False
    )

    assert await route(strategy, request=request) == ON_DEVICE
    assert request.config.system_instruction == "three four"  # The caller's request is left alone.


async def test_input_size_rejects_a_counter_that_returns_no_whole_number():
    strategy = InputSizeStrategy(max_tokens=3, count_tokens=lambda request: 2.5)

    with pytest.raises(TypeError, match="returns its number of tokens"):
        await route(strategy)


def test_request_text_reads_everything_the_model_reads():
    request = make_request("hello", "world")
    request.config.system_instruction = types.Content(parts=[types.Part(text="be brief")])
    request.contents[0].parts.append(types.Part(text="hidden", thought=True))
    request.contents.append(
        types.Content(
            role="user",
            parts=[types.Part(function_response=types.FunctionResponse(name="f", response={"n": 1}))],
        )
    )

    assert request_text(request) == 'be brief\nhello\nworld\n{"name": "f", "response": {"n": 1}}'
    assert request_text(request, system_instruction=False, thoughts=True).startswith("hello\nhidden\n")


def test_estimate_tokens_counts_every_message_of_the_request():
    request = make_request("hello there", "general kenobi")
    request.config.system_instruction = "be brief"

    expected = sum(
        estimate_tokens(text) + TOKENS_PER_MESSAGE for text in ("be brief", "hello there", "general kenobi")
    )
    assert estimate_tokens(request) == expected


@pytest.mark.parametrize(
    ("text", "at_least"),
    [
        ("日本語" * 100, 600),  # Two tokens or more a character for a byte-level tokenizer.
        ("Привет" * 100, 600),
        ("🎉" * 100, 300),
        ("hello world " * 50, 100),
    ],
)
def test_estimate_tokens_does_not_take_non_latin_text_for_four_characters_a_token(text, at_least):
    assert estimate_tokens(text) >= at_least


async def test_input_size_makes_no_decision_after_a_failure():
    assert await route(InputSizeStrategy(max_chars=10), failed(ON_DEVICE)) is None


async def test_first_match_takes_the_first_decision_in_order():
    strategy = FirstMatch([Fixed(None), Fixed(""), Fixed("b"), Fixed("c")])

    assert await route(strategy) == "b"


async def test_first_match_asks_its_children_after_failures_too():
    strategy = FirstMatch([PreRoutingStrategy(lambda ctx: "a"), FallbackStrategy(["a", "b"])])

    assert await route(strategy, failed("a")) == "b"


async def test_first_match_with_no_decision_decides_nothing():
    assert await route(FirstMatch([Fixed(None)])) is None


async def test_with_fallback_takes_the_strategys_pick_first():
    assert await route(WithFallback(Fixed("b"), fallback_order=["a"])) == "b"


async def test_with_fallback_picks_the_tail_head_when_the_strategy_makes_no_decision():
    assert await route(WithFallback(Fixed(None), fallback_order=["c", "a"])) == "c"


async def test_with_fallback_tries_only_tail_keys_after_a_failure():
    strategy = WithFallback(Fixed("b"), fallback_order=["a"])

    assert await route(strategy, failed("b")) == "a"
    assert await route(strategy, failed("b", "a")) is None


async def test_with_fallback_stops_on_a_permanent_error():
    strategy = WithFallback(Fixed("b"), fallback_order=["a"])

    assert await route(strategy, failed("b", error=PermanentModelError())) is None


async def test_routing_context_reads_the_request_text():
    request = make_request("hello", "world")
    request.contents[0].parts.append(types.Part(text="hidden", thought=True))
    ctx = RoutingContext(request=request, models=MODELS)

    assert (ctx.input_text, ctx.input_chars, ctx.is_failover, ctx.failed_keys) == (
        "hello\nworld",
        11,
        False,
        set(),
    )


def test_custom_strategy_subclass_is_a_router():
    llm = RoutedLlm(models=[ScriptedLlm(model="a")], router=Fixed("a"))

    assert llm.router.decide(None) == "a"


@pytest.mark.parametrize(
    ("build", "error", "message"),
    [
        (lambda: FallbackStrategy([]), ValueError, "is empty"),
        (lambda: FallbackStrategy("ab"), TypeError, "list of keys"),
        (lambda: FallbackStrategy(["a", "a"]), ValueError, r"\['a'\] more than once"),
        (lambda: FallbackStrategy(["a", 1]), TypeError, "non-empty key string"),
        (lambda: PreRoutingStrategy("a"), TypeError, "must be callable"),
        (lambda: ConnectivityStrategy(is_online=True), TypeError, "must be callable"),
        (lambda: InputSizeStrategy(), ValueError, "exactly one limit"),
        (lambda: InputSizeStrategy(max_chars=1, max_tokens=1), ValueError, "exactly one limit"),
        (lambda: InputSizeStrategy(max_chars=-1), ValueError, ">= 0"),
        (lambda: FirstMatch([]), ValueError, "at least one"),
        (lambda: FirstMatch([lambda ctx: "a"]), TypeError, "PreRoutingStrategy"),
        (lambda: WithFallback(Fixed("a"), fallback_order=[]), ValueError, "is empty"),
        (lambda: WithFallback("a", fallback_order=["a"]), TypeError, "takes a Strategy"),
    ],
)
def test_strategies_reject_bad_arguments_at_construction(build, error, message):
    with pytest.raises(error, match=message):
        build()


def test_routed_llm_rejects_a_strategy_naming_keys_it_does_not_have():
    with pytest.raises(ValueError, match="'pro'"):
        RoutedLlm(models=[ScriptedLlm(model="flash")], router=FallbackStrategy(["flash", "pro"]))


async def test_a_strategy_returning_a_non_string_is_a_clear_error():
    with pytest.raises(TypeError, match=r"Fixed.decide returned 3"):
        await route(Fixed(3))  # type: ignore[arg-type]
