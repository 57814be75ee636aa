"""ABTestStrategy: weighted, sticky, stateless arms, recorded in session events."""

from __future__ import annotations

from collections import Counter

import pytest
from google.adk.agents import LlmAgent

from routed_llm import RoutedLlm, RoutingPlugin, format_arm_table, tabulate_arms
from routed_llm.strategies import ABTestStrategy, RoutingContext, WithFallback
from routed_llm.testing import ScriptedLlm
from tests.conftest import make_runner, run_agent

USERS = [f"user-{index}" for index in range(10_000)]


def experiment(**kwargs) -> ABTestStrategy:
    kwargs.setdefault("default_arm", "flash")
    return ABTestStrategy("flash-vs-pro", {"flash": 90, "pro": 10}, **kwargs)


def answering(model: str) -> ScriptedLlm:
    return ScriptedLlm(model=model, script=lambda request: f"answer from {model}")


def test_observed_split_of_10000_users_is_within_a_few_percent_of_the_weights():
    split = Counter(experiment().assign(user) for user in USERS)

    assert abs(split["flash"] / len(USERS) - 0.90) < 0.02
    assert abs(split["pro"] / len(USERS) - 0.10) < 0.02


def test_a_user_keeps_the_same_arm_across_calls_and_new_instances():
    first = [experiment().assign(user) for user in USERS]
    again = [experiment().assign(user) for user in USERS]
    reordered = ABTestStrategy("flash-vs-pro", {"pro": 10, "flash": 90}, default_arm="pro")

    assert again == first
    assert [reordered.assign(user) for user in USERS] == first


def test_a_different_experiment_name_reshuffles_the_users():
    other = ABTestStrategy("another-test", {"flash": 90, "pro": 10}, default_arm="flash")

    changed = sum(experiment().assign(user) != other.assign(user) for user in USERS)

    assert changed > 1000


def test_an_arm_with_zero_weight_is_never_assigned():
    strategy = ABTestStrategy("holdout", {"flash": 1, "pro": 0}, default_arm="pro")

    assert {strategy.assign(user) for user in USERS} == {"flash"}


@pytest.mark.parametrize(
    ("arms", "default", "error", "message"),
    [
        ({}, "a", ValueError, "maps each key"),
        ({"a": -1, "b": 2}, "a", ValueError, "negative"),
        ({"a": 0, "b": 0}, "a", ValueError, "add up to 0"),
        ({"a": float("nan")}, "a", TypeError, "finite number"),
        ({"a": "90"}, "a", TypeError, "finite number"),
        ({"a": 1}, "b", ValueError, "not one of the arms"),
    ],
)
def test_weights_are_validated_at_construction(arms, default, error, message):
    with pytest.raises(error, match=message):
        ABTestStrategy("exp", arms, default_arm=default)


async def test_requests_without_a_unit_id_go_to_the_default_arm():
    llm = RoutedLlm(models=[answering("flash"), answering("pro")], router=experiment(default_arm="pro"))
    agent = LlmAgent(name="assistant", model=llm)

    with pytest.warns(UserWarning, match="RoutingPlugin"):
        _, stored = await run_agent(agent, "hi")  # No RoutingPlugin: no user id.

    route = stored[-1].custom_metadata["routed_llm"]
    assert (route["arm"], route["key"]) == ("pro", "pro")


async def test_arm_and_experiment_land_in_stored_session_events():
    strategy = experiment()
    agent = LlmAgent(
        name="assistant", model=RoutedLlm(models=[answering("flash"), answering("pro")], router=strategy)
    )

    _, stored = await run_agent(agent, "hi", plugins=[RoutingPlugin()], user_id="user-7")

    route = stored[-1].custom_metadata["routed_llm"]
    assert (route["experiment"], route["arm"]) == ("flash-vs-pro", strategy.assign("user-7"))


async def test_sessions_as_the_unit_split_one_users_sessions():
    strategy = experiment(unit="session")
    agent = LlmAgent(
        name="assistant", model=RoutedLlm(models=[answering("flash"), answering("pro")], router=strategy)
    )
    runner = make_runner(agent, plugins=[RoutingPlugin()])
    arms = set()

    for number in range(40):  # Fixed session ids, so the split is the same on every run.
        session = await runner.session_service.create_session(
            app_name="test_app", user_id="same-user", session_id=f"session-{number}"
        )
        _, stored = await run_agent(agent, "hi", runner=runner, user_id="same-user", session_id=session.id)
        arms.add(stored[-1].custom_metadata["routed_llm"]["arm"])

    assert arms == {"flash", "pro"}


async def test_a_custom_unit_function_picks_the_unit():
    def team(ctx: RoutingContext) -> str | None:
        return ctx.invocation.state.get("team") if ctx.invocation else None

    strategy = experiment(unit=team)
    agent = LlmAgent(
        name="assistant", model=RoutedLlm(models=[answering("flash"), answering("pro")], router=strategy)
    )
    runner = make_runner(agent, plugins=[RoutingPlugin()])
    session = await runner.session_service.create_session(
        app_name="test_app", user_id="u", state={"team": "blue"}
    )

    _, stored = await run_agent(agent, "hi", runner=runner, user_id="u", session_id=session.id)

    assert stored[-1].custom_metadata["routed_llm"]["arm"] == strategy.assign("blue")


async def test_a_failed_arm_falls_back_and_the_metadata_says_so():
    pro_user = next(user for user in USERS if experiment().assign(user) == "pro")
    pro = ScriptedLlm(model="pro", script=[ConnectionError("pro is down")])
    llm = RoutedLlm(
        models=[answering("flash"), pro], router=WithFallback(experiment(), fallback_order=["flash"])
    )

    _, stored = await run_agent(
        LlmAgent(name="assistant", model=llm), "hi", plugins=[RoutingPlugin()], user_id=pro_user
    )

    route = stored[-1].custom_metadata["routed_llm"]
    assert (route["arm"], route["key"], route["failed_keys"]) == ("pro", "flash", ["pro"])


async def test_analysis_tabulates_answers_failovers_and_tokens_per_arm():
    flash_user = next(user for user in USERS if experiment().assign(user) == "flash")
    pro_user = next(user for user in USERS if experiment().assign(user) == "pro")
    pro = ScriptedLlm(model="pro", script=[ConnectionError("down"), "pro answer"])
    llm = RoutedLlm(
        models=[answering("flash"), pro], router=WithFallback(experiment(), fallback_order=["flash"])
    )
    agent = LlmAgent(name="assistant", model=llm)
    runner = make_runner(agent, plugins=[RoutingPlugin()])
    events = []
    for user in (flash_user, pro_user, pro_user):
        _, stored = await run_agent(agent, "hi", runner=runner, user_id=user)
        events += stored

    table = tabulate_arms(events, experiment="flash-vs-pro")

    assert (table["flash"].answers, table["flash"].failovers) == (1, 0)
    assert (table["pro"].answers, table["pro"].failovers, dict(table["pro"].served_by)) == (
        2,
        1,
        {"flash": 1, "pro": 1},
    )
    assert "| pro | 2 | 1 (50%) |" in format_arm_table(table)
