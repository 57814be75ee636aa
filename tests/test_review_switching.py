"""Adversarial review of issue 21: switching models inside a conversation.

Real ADK runners, the real ``google.adk.models.Gemini`` client against the
fake Gemini server (which checks thought signatures and refuses parts with
no data, as Gemini does), under the google-genai transport named by
ROUTED_LLM_GENAI_TRANSPORT.
"""

from __future__ import annotations

import ast
import re
import textwrap
from pathlib import Path

import pytest
from google.adk.agents import LlmAgent
from google.adk.models import Gemini
from google.adk.tools import google_search
from google.genai import types
from google.genai.errors import ServerError

from routed_llm import RoutedLlm, RoutingError, RoutingPlugin
from routed_llm.ondevice import LlamaCppLlm
from routed_llm.strategies import CLOUD, ON_DEVICE, FallbackStrategy, RoutingContext
from routed_llm.testing import ScriptedLlm
from tests.conftest import collect, get_weather, in_order, make_request, run_agent, texts
from tests.fake_servers import Error, FakeGemini, FunctionCall, Recorded, Text
from tests.test_provider_gemini import gemini, genai_transport  # noqa: F401 - an autouse fixture.
from tests.test_thought_signatures import all_signatures, function_answer, run_turn

GEMINI_3 = "gemini-3-pro-preview"
FLASH = "gemini-2.5-flash"


@pytest.fixture
def server():
    fake = FakeGemini().start()
    yield fake
    fake.stop()


def sent_parts(request: Recorded) -> list[dict]:
    return [part for content in request.body["contents"] for part in content.get("parts", [])]


def weather_call() -> types.Part:
    return types.Part(function_call=types.FunctionCall(name="get_weather", args={"city": "Paris"}))


async def test_a_thinking_block_of_another_provider_is_not_sent_to_gemini_as_an_empty_part(server):
    # Claude's redacted thinking: a thought whose only content is its signature.
    redacted = types.Part(thought=True, thought_signature=b"claude redacted thinking")
    claude = ScriptedLlm(
        model="claude-sonnet-4",
        script=[types.Content(role="model", parts=[redacted, weather_call()]), ConnectionError("down")],
    )
    server.script(GEMINI_3, Text("Sunny in Paris."))
    routed = RoutedLlm(
        models={"claude": claude, "gemini": gemini(server.url, GEMINI_3)},
        router=in_order(["claude", "gemini"]),
    )
    agent = LlmAgent(name="assistant", model=routed, tools=[get_weather])

    events, _ = await run_agent(agent, "Weather in Paris?")

    assert texts(events)[-1] == "Sunny in Paris."
    assert {"thought": True} not in sent_parts(server.calls_to(GEMINI_3)[0])


async def test_a_signature_only_part_of_another_key_is_left_out_for_a_model_that_is_not_gemini():
    # Gemini 3 streams its signature on a part of its own.
    signature_only = types.Part(thought_signature=b"gemini signature")
    a = ScriptedLlm(
        model=GEMINI_3,
        script=[types.Content(role="model", parts=[types.Part(text="Hello."), signature_only])],
    )
    other = ScriptedLlm(model="claude-sonnet-4", script=["Hello again."])
    order = ["a"]
    routed = RoutedLlm(models={"a": a, "other": other}, router=in_order(order))
    first = await collect(routed.generate_content_async(make_request("Hi")))
    order[:] = ["other"]
    request = make_request("Hi")
    request.contents += [first[0].content, types.Content(role="user", parts=[types.Part(text="Again")])]

    await collect(routed.generate_content_async(request))

    assert other.calls[0].contents[1].parts == [types.Part(text="Hello.")]


async def test_a_model_turn_holding_only_another_keys_signature_is_left_out():
    a = ScriptedLlm(
        model=GEMINI_3,
        script=[types.Content(role="model", parts=[types.Part(thought=True, thought_signature=b"sig-a")])],
    )
    other = ScriptedLlm(model="claude-sonnet-4", script=["Hello."])
    order = ["a"]
    routed = RoutedLlm(models={"a": a, "other": other}, router=in_order(order))
    first = await collect(routed.generate_content_async(make_request("Hi")))
    order[:] = ["other"]
    request = make_request("Hi")
    request.contents += [first[0].content, types.Content(role="user", parts=[types.Part(text="Again")])]

    await collect(routed.generate_content_async(request))

    assert [content.parts[0].text for content in other.calls[0].contents] == ["Hi", "Again"]


async def test_a_failover_pick_that_cannot_serve_the_request_is_an_error_chained_to_the_models_failure(
    server,
):
    server.script(FLASH, Error(503, "UNAVAILABLE"))
    local = ScriptedLlm(model="local-model", script=["Never asked."])
    routed = RoutedLlm(
        models={"cloud": gemini(server.url, FLASH), "local": local}, router=in_order(["cloud", "local"])
    )
    agent = LlmAgent(name="assistant", model=routed, tools=[google_search])

    with pytest.raises(RoutingError, match="google_search") as raised:
        await run_agent(agent, "Look it up.")

    assert isinstance(raised.value.__cause__, ServerError)
    assert raised.value.__cause__.code == 503
    assert local.calls == []


ROOT = Path(__file__).resolve().parents[1]


def markdown_snippets() -> list[tuple[str, str]]:
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    return [
        (page.name, block)
        for page in pages
        for block in re.findall(r"```python\n(.*?)```", page.read_text(), re.DOTALL)
    ]


def docstring_snippets() -> list[tuple[str, str]]:
    """The ``::`` literal blocks of every docstring in the package."""
    found = []
    for path in sorted((ROOT / "routed_llm").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                docstring = ast.get_docstring(node) or ""
                for block in re.findall(r"::\n\n((?:(?:    .*)?\n)+)", docstring + "\n"):
                    found.append((path.name, textwrap.dedent(block)))
    return found


def slow_geminis(source: str) -> list[str]:
    """The calls in a snippet that build a Gemini with google-genai's default retries."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        name = getattr(node.func, "id", getattr(node.func, "attr", ""))
        if name == "Gemini":
            if not {keyword.arg for keyword in node.keywords} & {"retry_options", "client", None}:
                found.append(ast.unparse(node))
        elif name != "LlmClassifier":  # Not failed over: its strategy's timeout= bounds it.
            values = [*node.args, *(keyword.value for keyword in node.keywords if keyword.arg != "name")]
            for argument in list(values):
                if isinstance(argument, ast.Dict):
                    values += argument.values
                elif isinstance(argument, (ast.List, ast.Tuple)):
                    values += argument.elts
            if any(
                isinstance(value, ast.Constant) and str(value.value).startswith("gemini-") for value in values
            ):
                found.append(ast.unparse(node))  # A model name: a Gemini with the default retries.
    return found


def test_every_snippet_in_the_docs_and_docstrings_builds_gemini_with_one_attempt_so_it_fails_over_fast():
    snippets = markdown_snippets() + docstring_snippets()

    slow = {f"{where}: {call}" for where, source in snippets for call in slow_geminis(source)}

    assert len(snippets) > 40
    assert sorted(slow) == []


async def test_google_search_works_beside_sub_agents_when_every_key_is_a_gemini_3_model(server):
    server.script(GEMINI_3, Text("Found it."))
    routed = RoutedLlm(
        models={"a": gemini(server.url, GEMINI_3), "b": gemini(server.url, "gemini-3-flash-preview")},
        router=FallbackStrategy(["a", "b"]),
    )
    helper = LlmAgent(name="helper", model=ScriptedLlm(model="helper-model", script=["Never asked."]))
    agent = LlmAgent(name="assistant", model=routed, tools=[google_search], sub_agents=[helper])

    events, _ = await run_agent(agent, "Look it up.")

    assert texts(events) == ["Found it."]
    tools = [name for tool in server.calls_to(GEMINI_3)[0].body["tools"] for name in tool]
    assert "googleSearch" in tools


def test_a_gemini_key_before_3_keeps_the_name_adk_reads_as_unable_to_combine_search_and_functions():
    routed = RoutedLlm(
        models={"a": Gemini(model=GEMINI_3), "b": Gemini(model=FLASH), "local": ScriptedLlm(model="local")},
        router=FallbackStrategy(["a", "b", "local"]),
    )

    assert routed.model.startswith("gemini-routed[")


def test_the_context_window_check_estimates_a_long_conversation_only_until_the_window_is_reached(monkeypatch):
    import routed_llm.strategies.text as text

    estimated: list[str] = []
    estimate = text._text_tokens

    def counted(message: str) -> float:
        estimated.append(message)
        return estimate(message)

    monkeypatch.setattr(text, "_text_tokens", counted)
    turns = [f"Message {number}: " + "a fairly long line of conversation " * 30 for number in range(300)]
    routed = RoutedLlm(
        models={ON_DEVICE: LlamaCppLlm(n_ctx=1024), CLOUD: ScriptedLlm(model="cloud")},
        router=FallbackStrategy([ON_DEVICE, CLOUD]),
    )

    reason = RoutingContext(make_request(*turns), routed.models).unavailable_reason(ON_DEVICE)

    assert "context window" in reason
    assert len(estimated) < 10


async def test_a_key_whose_model_was_upgraded_between_processes_never_gets_the_old_models_signatures(
    server, tmp_path
):
    db = tmp_path / "sessions.db"
    upgrade = "gemini-3.1-pro-preview"
    server.script(GEMINI_3, FunctionCall("get_weather", {"city": "Paris"}), Text("Sunny in Paris."))
    server.script(upgrade, Text("Rome is sunny too."))
    before = RoutedLlm(models={"primary": gemini(server.url, GEMINI_3)}, router=lambda *_: "primary")
    session_id, _ = await run_turn(
        db, before, "Weather in Paris?", session_id=None, plugins=[RoutingPlugin()]
    )
    after = RoutedLlm(models={"primary": gemini(server.url, upgrade)}, router=lambda *_: "primary")

    _, answer = await run_turn(db, after, "And Rome?", session_id=session_id, plugins=[RoutingPlugin()])

    assert answer[-1] == "Rome is sunny too."
    assert all_signatures(server.calls_to(upgrade)[0]) == []


async def test_without_the_plugin_a_routed_llm_forgets_all_but_its_most_recent_10000_signatures():
    call = weather_call().model_copy(update={"thought_signature": b"oldest"})
    many = [
        types.Part(text=str(number), thought_signature=f"sig {number}".encode()) for number in range(10_000)
    ]
    a = ScriptedLlm(
        model=GEMINI_3,
        script=[types.Content(role="model", parts=[call]), types.Content(role="model", parts=many)],
    )
    b = ScriptedLlm(model=GEMINI_3, script=["Sunny."])
    order = ["a"]
    routed = RoutedLlm(models={"a": a, "b": b}, router=in_order(order))
    first = await collect(routed.generate_content_async(make_request("Weather?")))
    await collect(routed.generate_content_async(make_request("Count to 10,000.")))
    order[:] = ["b"]
    request = make_request("Weather?")
    request.contents += [first[0].content, function_answer("get_weather")]

    await collect(routed.generate_content_async(request))

    assert b.calls[0].contents[1].parts[0].thought_signature == b"oldest"  # Of unknown issuer now.
