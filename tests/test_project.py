"""The README's and docs' promises: quick start and CI in step, snippets true, the demo runs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from google.adk.agents import LlmAgent
from google.adk.models import Gemini

from routed_llm import Limit, RateLimits, RoutedLlm, hybrid_model_on_device_cloud
from routed_llm.redis import RedisStore
from routed_llm.strategies import (
    CLOUD,
    ON_DEVICE,
    ConnectivityStrategy,
    FirstMatch,
    InputSizeStrategy,
    PreRoutingStrategy,
    request_text,
)
from routed_llm.testing import ScriptedLlm
from tests.conftest import make_request, run_agent, texts
from tests.fake_servers import Error, FakeGemini, Text

ROOT = Path(__file__).resolve().parents[1]


def quick_start_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.DOTALL)
    assert block is not None, "the Quick start section has no bash block"
    return [line for line in block.group(1).splitlines() if line.strip()]


def python_block(page: str, heading: str, index: int = 0) -> str:
    """The ``index``-th Python block after ``heading`` (a whole line) on ``page``."""
    section = (ROOT / page).read_text().split(f"\n{heading}\n", 1)[1]
    return re.findall(r"```python\n(.*?)```", section, re.DOTALL)[index]


def run_snippet(page: str, heading: str, **stand_ins: object) -> dict[str, object]:
    """Runs a page's Python block as pasted; ``stand_ins`` are the names it leaves to the reader."""
    namespace: dict[str, object] = dict(stand_ins)
    exec(compile(python_block(page, heading), f"{page}, {heading}", "exec"), namespace)
    return namespace


def retry_attempts(llm: RoutedLlm) -> dict[str, int | None]:
    """Each routed Gemini's attempts per call; None where google-genai's default retries apply."""
    models = {key: model for key, model in llm.models.items() if isinstance(model, Gemini)}
    return {
        key: model.retry_options.attempts if model.retry_options else None for key, model in models.items()
    }


def agents_model(namespace: dict[str, object]) -> RoutedLlm:
    """The RoutedLlm of the ``agent`` a snippet built."""
    agent = namespace["agent"]
    assert isinstance(agent, LlmAgent)
    assert isinstance(agent.model, RoutedLlm)
    return agent.model


def hybrid_snippet(on_device: ScriptedLlm) -> RoutedLlm:
    """The README's hybrid snippet, with what it leaves to the reader: online, not opted out."""
    namespace = run_snippet(
        "README.md",
        "## Ready-made strategies",
        on_device_model=on_device,
        user_opted_out_of_cloud=False,
        net=SimpleNamespace(is_online=lambda: True),
    )
    smart = namespace["smart"]
    assert isinstance(smart, RoutedLlm)
    return smart


@pytest.fixture
def genai_transport(monkeypatch):
    """google-genai on the transport under test, with a key, as in tests/test_provider_gemini.py."""
    import google.genai._api_client as api_client

    transport = os.environ.get("ROUTED_LLM_GENAI_TRANSPORT", "httpx")
    monkeypatch.setattr(api_client, "has_aiohttp", transport == "aiohttp")
    monkeypatch.setenv("GOOGLE_API_KEY", "test-key")


def test_the_readmes_first_snippet_makes_one_attempt_per_model_so_it_fails_over_at_once():
    llm = agents_model(run_snippet("README.md", "## Use"))

    assert retry_attempts(llm) == {"primary": 1, "fallback": 1}


def test_the_docs_home_page_snippet_runs_and_makes_one_attempt_per_model():
    llm = agents_model(run_snippet("docs/index.md", "## Quick start"))

    assert retry_attempts(llm) == {"flash": 1, "pro": 1}


def test_a_model_name_builds_a_gemini_with_genais_default_retries_as_the_readme_warns():
    llm = RoutedLlm(models={"pro": "gemini-2.5-pro"}, router=lambda *_: "pro")

    assert retry_attempts(llm) == {"pro": None}


def test_the_readmes_hybrid_snippet_makes_one_attempt_on_the_cloud():
    smart = hybrid_snippet(ScriptedLlm(model="on-device"))

    assert retry_attempts(smart) == {"cloud": 1}


@pytest.mark.usefixtures("genai_transport")
async def test_the_readmes_hybrid_snippet_answers_on_the_device_when_the_cloud_key_is_refused(monkeypatch):
    server = FakeGemini().start()
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", server.url)
    server.script("gemini-2.5-flash", Error(401, "UNAUTHENTICATED"))
    smart = hybrid_snippet(ScriptedLlm(model="on-device", script=["answered on the device"]))
    try:
        events, _ = await run_agent(LlmAgent(name="assistant", model=smart), "What is the capital of France?")
    finally:
        server.stop()

    assert len(server.calls_to("gemini-2.5-flash")) == 1
    assert texts(events) == ["answered on the device"]
    assert events[0].custom_metadata["routed_llm"]["failed_keys"] == ["cloud"]


def page_text(page: str) -> str:
    """A docs page with its line breaks folded, so a sentence reads as one line."""
    return " ".join((ROOT / page).read_text().split())


def one_word_rule() -> PreRoutingStrategy:
    """The strategies page's one-line PreRoutingStrategy example, with its imports."""
    names = {"PreRoutingStrategy": PreRoutingStrategy, "ON_DEVICE": ON_DEVICE, "request_text": request_text}
    rule = eval(python_block("docs/strategies.md", "### PreRoutingStrategy").strip(), names)
    assert isinstance(rule, PreRoutingStrategy)
    return rule


async def test_every_word_the_strategies_page_says_its_one_word_rule_leaks_gets_past_it():
    rule = one_word_rule()
    listed = re.search(r"A one-word rule like this one leaks \((.*?)\)", page_text("docs/strategies.md"))
    assert listed is not None
    leaks = re.findall(r'"(.*?)"', listed.group(1).split(";")[0])

    decisions = {word: await rule({}, make_request(f"Here it is: {word}"), None) for word in leaks}

    assert leaks
    assert decisions == dict.fromkeys(leaks)


async def test_the_one_word_rule_catches_the_word_the_strategies_page_says_it_catches():
    rule = one_word_rule()
    assert '"passwords" it does catch' in page_text("docs/strategies.md")

    assert await rule({}, make_request("my passwords are in a file"), None) == ON_DEVICE


NEVER_FALL_BACK = {
    "PreRoutingStrategy(fn)": lambda: PreRoutingStrategy(lambda ctx: CLOUD),
    "ConnectivityStrategy": lambda: ConnectivityStrategy(is_online=lambda: True),
    "InputSizeStrategy": lambda: InputSizeStrategy(max_chars=1, small=ON_DEVICE, large=CLOUD),
    "FirstMatch": lambda: FirstMatch(
        [PreRoutingStrategy(lambda ctx: ""), ConnectivityStrategy(is_online=lambda: True)]
    ),
}


def test_the_readme_names_exactly_the_strategies_that_never_fall_back_on_their_own():
    prose = page_text("README.md").split("## Ready-made strategies", 1)[1].split("```")[2]
    claim = next(sentence for sentence in prose.split(". ") if "never fall back" in sentence)
    transient_only = next(sentence for sentence in prose.split(". ") if "only on transient" in sentence)

    assert set(re.findall(r"`([^`]+)`", claim.split("never fall back")[0])) == set(NEVER_FALL_BACK)
    assert set(re.findall(r"`([^`]+)`", transient_only.split("only on transient")[0])) == {
        "FallbackStrategy(order)",
        "WithFallback",
    }


@pytest.mark.parametrize("name", NEVER_FALL_BACK)
async def test_a_strategy_the_readme_says_never_falls_back_lets_a_transient_failure_propagate(name):
    outage = ConnectionError("cloud unreachable")
    device = ScriptedLlm(model="on-device", script=["never asked"])
    smart = hybrid_model_on_device_cloud(
        on_device=device, cloud=ScriptedLlm(model="cloud", script=[outage]), strategy=NEVER_FALL_BACK[name]()
    )

    with pytest.raises(ConnectionError) as raised:
        await run_agent(LlmAgent(name="assistant", model=smart), "What is the capital of France?")

    assert raised.value is outage
    assert device.calls == []


def test_the_replicas_page_says_names_begin_with_a_letter_or_digit_as_the_store_enforces():
    redis = pytest.importorskip("redis.asyncio", reason="install the 'redis' extra (nox does)")
    assert "Both begin with a letter or digit." in page_text("docs/replicas.md")

    with pytest.raises(ValueError, match="beginning with a letter or digit"):
        RedisStore(redis.Redis(), namespace="-support-bot")
    with pytest.raises(ValueError, match="beginning with a letter or digit"):
        RateLimits({"_pro": Limit(rpm=60)}, store=RedisStore(redis.Redis(), namespace="support-bot"))


def test_quick_start_holds_exactly_two_commands():
    assert len(quick_start_commands()) == 2


def test_ci_runs_the_readmes_test_command_verbatim():
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()

    assert quick_start_commands()[1] in ci_lines


def run_example(
    *path: str, without_api_key: bool = False, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Runs an example script; fails the test if it exits non-zero."""
    hidden = {"GOOGLE_API_KEY", "GEMINI_API_KEY"} if without_api_key else set()
    return subprocess.run(
        [sys.executable, str(ROOT.joinpath("examples", *path))],
        capture_output=True,
        text=True,
        env={key: value for key, value in os.environ.items() if key not in hidden} | (env or {}),
        timeout=300,
        check=True,
    )


def test_failover_example_fails_over_to_the_local_model_without_an_api_key():
    result = run_example("failover", "run.py", without_api_key=True)

    assert result.stdout.count("served by 'local' (local-rules) after cloud failed: ValueError") == 2
    assert "Traceback" not in result.stderr


def test_recipes_example_shows_each_recipes_route():
    result = run_example("recipes", "hybrid_recipes.py")

    lines = {line.split("->")[0].strip(): line.split("->")[1].strip() for line in result.stdout.splitlines()}
    assert lines["PREFER_IN_CLOUD                    cloud down"] == "on_device (failed before it: ['cloud'])"
    assert lines["rule, then fall back (opted out)   cloud up"] == "on_device (failed before it: none)"


def test_ab_example_tabulates_both_arms_and_shows_a_routed_span():
    result = run_example("ab_test", "run.py")

    assert "| pro | " in result.stdout
    assert "| flash | " in result.stdout
    assert "routed_llm.arm = 'pro'" in result.stdout
    assert "event routed_llm.attempt_failed" in result.stdout
    assert result.stderr == ""


def test_per_user_example_routes_premium_users_to_pro():
    result = run_example("per_user", "run.py")

    assert result.stdout.splitlines() == [
        "ada (premium): a thorough answer [served by 'pro']",
        "bob (basic): a quick answer [served by 'flash']",
    ]
    assert result.stderr == ""


def test_classifier_router_example_sends_hard_questions_to_the_strong_model():
    lines = run_example("routers", "classifier_router.py").stdout.splitlines()

    assert lines == [
        "'What is the capital of Peru?' -> fast",
        "'Explain why the sky is blue, step by step.' -> strong",
    ]


def test_retry_example_retries_the_primary_before_falling_back():
    result = run_example("routers", "retry_then_fallback.py")

    assert result.stdout.strip() == "primary answered on retry (key 'primary_retry', after ['primary'])"


def test_input_size_example_routes_long_prompts_to_the_large_model():
    assert run_example("routers", "by_input_size.py").stdout.splitlines() == [
        "23 chars -> small",
        "1011 chars -> large",
    ]


def test_complexity_example_routes_on_the_classifiers_label_and_falls_back_when_it_fails():
    result = run_example("routers", "by_complexity.py")

    assert result.stdout.splitlines() == [
        "'What is the capital of Peru?': simple (0.90) -> small",
        "'Plan a week in Peru and compare the routes: why is one better?': complex (0.95) -> large",
        "'Peru?!': no label (the classifier failed) -> large",
    ]
    assert "Traceback" not in result.stderr


def test_hybrid_demo_answers_on_device_and_says_why_without_an_api_key():
    pytest.importorskip("llama_cpp", reason="install the 'ondevice' extra (nox does)")

    result = run_example("hybrid", "run.py", without_api_key=True)

    assert "Loading the on-device model (SmolLM2-135M-Instruct)... ready in" in result.stdout
    assert (
        "[on_device (smollm2-135m-instruct): no GOOGLE_API_KEY: the cloud is out of reach]" in result.stdout
    )
    assert "[on_device (smollm2-135m-instruct): private prompt stays on the device]" in result.stdout
    assert result.stderr == ""


def test_hybrid_demo_answers_on_device_when_the_cloud_key_is_stale():
    pytest.importorskip("llama_cpp", reason="install the 'ondevice' extra (nox does)")
    stale = Error(
        400, "INVALID_ARGUMENT", "API key expired. Please renew the API key.", reason="API_KEY_INVALID"
    )
    server = FakeGemini().start()
    server.script("gemini-2.5-flash", *[stale] * 10)
    try:
        result = run_example(
            "hybrid",
            "run.py",
            # The device is never sure enough, so every public question tries the cloud.
            env={
                "GOOGLE_API_KEY": "stale-key",
                "GOOGLE_GEMINI_BASE_URL": server.url,
                "HYBRID_DEMO_MIN_CONFIDENCE": "1",
            },
        )
    finally:
        server.stop()

    assert "cloud failed: ClientError -> on_device" in result.stdout
    assert server.calls_to("gemini-2.5-flash")
    assert "Traceback" not in result.stderr


def test_routed_agent_example_routes_by_rule_and_fails_over_to_the_general_agent():
    result = run_example("routed_agent", "run.py")

    assert result.stdout.splitlines()[2::3] == [
        "   answered by 'billing' (rule: billing words)",
        "   answered by 'general' (no rule matched)",
        "   answered by 'general' (rule: billing words) after billing failed: ConnectionError",
    ]
    assert "Invoice 4711 was paid on 2026-11-03." in result.stdout


def test_prompt_ab_example_tabulates_both_instructions_over_200_users():
    result = run_example("routed_agent", "prompt_ab.py")

    rows = {line.split("|")[1].strip(): line for line in result.stdout.splitlines()[2:]}
    assert set(rows) == {"concise", "step_by_step"}
    answers = [int(row.split("|")[2]) for row in rows.values()]
    assert sum(answers) == 200
    assert all(answers)


def test_hybrid_demo_sends_the_cloud_only_public_questions_the_device_was_unsure_of():
    pytest.importorskip("llama_cpp", reason="install the 'ondevice' extra (nox does)")
    server = FakeGemini().start()
    server.script("gemini-2.5-flash", *[Text("Paris.")] * 10)
    try:
        result = run_example(
            "hybrid",
            "run.py",
            env={"GOOGLE_API_KEY": "test-key", "GOOGLE_GEMINI_BASE_URL": server.url},
        )
    finally:
        server.stop()

    cloud_calls = server.calls_to("gemini-2.5-flash")
    assert result.stdout.count("[cloud (gemini-2.5-flash): on_device was unsure -> cloud]") == len(
        cloud_calls
    )
    assert not any("medical" in str(call.body) for call in cloud_calls)
    assert "[on_device (smollm2-135m-instruct): private prompt stays on the device]" in result.stdout
