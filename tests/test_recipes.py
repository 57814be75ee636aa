"""The seed's recipes, end to end through RoutedLlm, over real error shapes."""

from __future__ import annotations

import pytest
from google.genai import errors

from routed_llm import hybrid_model_on_device_cloud
from routed_llm.strategies import (
    CLOUD,
    ON_DEVICE,
    PREFER_IN_CLOUD,
    PREFER_ON_DEVICE,
    ConnectivityStrategy,
    FallbackStrategy,
    FirstMatch,
    PreRoutingStrategy,
    WithFallback,
)
from routed_llm.testing import ScriptedLlm, Stream
from tests.conftest import collect, make_request, texts
from tests.test_error_policy import PERMANENT, TRANSIENT


def models(on_device_script=(), cloud_script=()):
    return ScriptedLlm(model="gemma-on-device", script=on_device_script), ScriptedLlm(
        model="gemini-cloud", script=cloud_script
    )


def rule_then_fallback(*, opted_out: bool, online: bool) -> WithFallback:
    return WithFallback(
        FirstMatch(
            [
                PreRoutingStrategy(lambda ctx: ON_DEVICE if opted_out else ""),
                ConnectivityStrategy(is_online=lambda: online, online=CLOUD, offline=ON_DEVICE),
            ]
        ),
        fallback_order=[ON_DEVICE],
    )


def test_factory_builds_a_routed_llm_with_exactly_the_two_keys():
    on_device, cloud = models()

    smart = hybrid_model_on_device_cloud(
        on_device=on_device, cloud=cloud, strategy=FallbackStrategy(PREFER_ON_DEVICE), model="smart"
    )

    assert dict(smart.models) == {ON_DEVICE: on_device, CLOUD: cloud}
    assert smart.model == "smart"


@pytest.mark.parametrize("error", TRANSIENT.values(), ids=TRANSIENT.keys())
async def test_prefer_on_device_falls_back_to_the_cloud_on_a_transient_error(error):
    on_device, cloud = models([error], ["cloud answer"])
    smart = hybrid_model_on_device_cloud(
        on_device=on_device, cloud=cloud, strategy=FallbackStrategy(PREFER_ON_DEVICE)
    )

    responses = await collect(smart.generate_content_async(make_request()))

    assert texts(responses) == ["cloud answer"]
    assert responses[0].custom_metadata["routed_llm"]["failed_keys"] == [ON_DEVICE]


@pytest.mark.parametrize("error", PERMANENT.values(), ids=PERMANENT.keys())
async def test_prefer_on_device_propagates_a_permanent_error_without_the_cloud(error):
    on_device, cloud = models([error])
    smart = hybrid_model_on_device_cloud(
        on_device=on_device, cloud=cloud, strategy=FallbackStrategy(PREFER_ON_DEVICE)
    )

    with pytest.raises(type(error)) as raised:
        await collect(smart.generate_content_async(make_request()))

    assert raised.value is error
    assert cloud.calls == []


@pytest.mark.parametrize("error", TRANSIENT.values(), ids=TRANSIENT.keys())
async def test_prefer_in_cloud_falls_back_on_device_on_a_transient_error(error):
    on_device, cloud = models(["device answer"], [error])
    smart = hybrid_model_on_device_cloud(
        on_device=on_device, cloud=cloud, strategy=FallbackStrategy(PREFER_IN_CLOUD)
    )

    assert texts(await collect(smart.generate_content_async(make_request()))) == ["device answer"]


@pytest.mark.parametrize("error", PERMANENT.values(), ids=PERMANENT.keys())
async def test_prefer_in_cloud_propagates_a_permanent_error_without_the_device(error):
    on_device, cloud = models((), [error])
    smart = hybrid_model_on_device_cloud(
        on_device=on_device, cloud=cloud, strategy=FallbackStrategy(PREFER_IN_CLOUD)
    )

    with pytest.raises(type(error)):
        await collect(smart.generate_content_async(make_request()))

    assert on_device.calls == []


@pytest.mark.parametrize("error", TRANSIENT.values(), ids=TRANSIENT.keys())
async def test_rule_recipe_never_sends_an_opted_out_request_to_the_cloud(error):
    on_device, cloud = models([error], ["must not happen"])
    smart = hybrid_model_on_device_cloud(
        on_device=on_device, cloud=cloud, strategy=rule_then_fallback(opted_out=True, online=True)
    )

    with pytest.raises(type(error)) as raised:
        await collect(smart.generate_content_async(make_request()))

    assert raised.value is error
    assert cloud.calls == []


@pytest.mark.parametrize("error", TRANSIENT.values(), ids=TRANSIENT.keys())
async def test_rule_recipe_online_falls_back_on_device_when_the_cloud_fails_transiently(error):
    on_device, cloud = models(["device answer"], [error])
    smart = hybrid_model_on_device_cloud(
        on_device=on_device, cloud=cloud, strategy=rule_then_fallback(opted_out=False, online=True)
    )

    assert texts(await collect(smart.generate_content_async(make_request()))) == ["device answer"]


@pytest.mark.parametrize("error", PERMANENT.values(), ids=PERMANENT.keys())
async def test_rule_recipe_propagates_a_permanent_cloud_error(error):
    on_device, cloud = models((), [error])
    smart = hybrid_model_on_device_cloud(
        on_device=on_device, cloud=cloud, strategy=rule_then_fallback(opted_out=False, online=True)
    )

    with pytest.raises(type(error)):
        await collect(smart.generate_content_async(make_request()))

    assert on_device.calls == []


async def test_rule_recipe_offline_answers_on_device_without_trying_the_cloud():
    on_device, cloud = models(["device answer"])
    smart = hybrid_model_on_device_cloud(
        on_device=on_device, cloud=cloud, strategy=rule_then_fallback(opted_out=False, online=False)
    )

    assert texts(await collect(smart.generate_content_async(make_request()))) == ["device answer"]
    assert cloud.calls == []


def cloud_that_breaks_after_one_token():
    overloaded = errors.ServerError(503, {"error": {"code": 503, "message": "x", "status": "UNAVAILABLE"}})
    on_device, cloud = models(["device answer"], [Stream(["first token"], error=overloaded)])
    smart = hybrid_model_on_device_cloud(
        on_device=on_device, cloud=cloud, strategy=FallbackStrategy(PREFER_IN_CLOUD)
    )
    return smart, on_device


async def test_strategy_built_model_streaming_propagates_an_error_after_the_first_token():
    smart, on_device = cloud_that_breaks_after_one_token()

    with pytest.raises(errors.ServerError):
        await collect(smart.generate_content_async(make_request(), stream=True))

    assert on_device.calls == []


async def test_strategy_built_model_not_streaming_falls_back_before_any_output():
    smart, _ = cloud_that_breaks_after_one_token()

    responses = await collect(smart.generate_content_async(make_request(), stream=False))

    assert texts(responses) == ["device answer"]
