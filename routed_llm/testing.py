"""A scripted fake model for testing routers and agents without a provider.

:class:`ScriptedLlm` answers each call with the next step of a script, and
records every request it received::

    from routed_llm.testing import ScriptedLlm, Stream

    primary = ScriptedLlm(model="primary", script=[ConnectionError("down")])
    backup = ScriptedLlm(model="backup", script=["Hello!"])
    llm = RoutedLlm(models=[primary, backup], router=FallbackStrategy(["primary", "backup"]))

A step is one of:

* a ``str``: answer with that text;
* a ``types.Part`` or ``types.Content``: answer with it;
* an ``LlmResponse``: yield it as it is;
* an exception instance: raise it before any output;
* a :class:`Stream`: text chunks, then optionally an error.

Instead of a list, ``script`` may be a function of the request that returns a
step, for a model that answers every call.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TypeAlias

from google.adk.models.base_llm import BaseLlm
from google.adk.models.base_llm_connection import BaseLlmConnection
from google.adk.models.llm_request import LlmRequest
from google.adk.models.llm_response import LlmResponse
from google.genai import types
from pydantic import ConfigDict, PrivateAttr
from typing_extensions import override

__all__ = ["RecordedCall", "ScriptExhaustedError", "ScriptedLlm", "Step", "Stream"]


@dataclass(frozen=True)
class Stream:
    """A streamed answer: text chunks, then optionally an error.

    With ``stream=True`` each chunk is yielded as a partial response, then
    (unless ``error`` is set) the whole text as the final response. With
    ``stream=False`` the whole text comes as one response. ``error`` is raised
    after the chunks in streaming mode, and before any output otherwise.

    Attributes:
        chunks: The text pieces, in order.
        error: An exception to raise after the chunks, or None.
        wait: An event each chunk after the first waits for, so a test can
            hold a stream open mid-way; None to stream without pause.
    """

    chunks: Sequence[str]
    error: BaseException | None = None
    wait: asyncio.Event | None = None


Step: TypeAlias = str | types.Part | types.Content | LlmResponse | BaseException | Stream
"""One answer of a :class:`ScriptedLlm`."""


@dataclass(frozen=True)
class RecordedCall:
    """A request as a :class:`ScriptedLlm` received it (deep copies).

    Attributes:
        model: ``llm_request.model`` at the time of the call.
        contents: The request's contents.
        config: The request's generation config.
        stream: Whether streaming was asked for.
        tool_names: The names in ``llm_request.tools_dict``.
    """

    model: str | None
    contents: list[types.Content]
    config: types.GenerateContentConfig
    stream: bool
    tool_names: tuple[str, ...] = field(default=())


class ScriptExhaustedError(AssertionError):
    """A :class:`ScriptedLlm` was called more often than its script allows."""


class ScriptedLlm(BaseLlm):
    """A fake ``BaseLlm`` that follows a script, for tests.

    Args:
        model: The model name (also its key when routed as a sequence).
        script: The steps to answer successive calls with, or a function of
            the request returning the step for every call.
        connect_error: If set, :meth:`connect` raises it; otherwise it opens a
            connection that yields the next step's responses.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    _steps: list[Step] | Callable[[LlmRequest], Step] = PrivateAttr()
    _connect_error: BaseException | None = PrivateAttr()
    _calls: list[RecordedCall] = PrivateAttr(default_factory=list)

    def __init__(
        self,
        *,
        model: str,
        script: Sequence[Step] | Callable[[LlmRequest], Step] = (),
        connect_error: BaseException | None = None,
    ) -> None:
        super().__init__(model=model)
        self._steps = script if callable(script) else list(script)
        self._connect_error = connect_error

    @property
    def calls(self) -> list[RecordedCall]:
        """Every call received so far, oldest first."""
        return list(self._calls)

    @override
    async def generate_content_async(
        self, llm_request: LlmRequest, stream: bool = False
    ) -> AsyncGenerator[LlmResponse, None]:
        """Answers with the next step of the script.

        Args:
            llm_request: The request; recorded in :attr:`calls`.
            stream: Whether to stream a :class:`Stream` step chunk by chunk.

        Yields:
            The step's responses.
        """
        self._calls.append(
            RecordedCall(
                model=llm_request.model,
                contents=[content.model_copy(deep=True) for content in llm_request.contents],
                config=llm_request.config.model_copy(deep=True),
                stream=stream,
                tool_names=tuple(llm_request.tools_dict),
            )
        )
        step = self._next_step(llm_request)
        if isinstance(step, BaseException):
            raise step
        if not isinstance(step, Stream):
            yield _as_response(step)
            return
        if not stream:
            if step.error is not None:
                raise step.error
            yield _text_response("".join(step.chunks))
            return
        for index, chunk in enumerate(step.chunks):
            if index and step.wait is not None:
                await step.wait.wait()
            yield _text_response(chunk, partial=True)
        if step.error is not None:
            raise step.error
        yield _text_response("".join(step.chunks))

    @override
    @asynccontextmanager
    async def connect(self, llm_request: LlmRequest) -> AsyncIterator[BaseLlmConnection]:
        """Opens a fake live connection, or raises ``connect_error``."""
        if self._connect_error is not None:
            raise self._connect_error
        yield _ScriptedConnection(self, llm_request)

    def _next_step(self, llm_request: LlmRequest) -> Step:
        if callable(self._steps):
            return self._steps(llm_request)
        if not self._steps:
            raise ScriptExhaustedError(
                f"ScriptedLlm {self.model!r} was called more often than its script allows."
            )
        return self._steps.pop(0)


def _as_response(step: str | types.Part | types.Content | LlmResponse) -> LlmResponse:
    """Turns a one-response step into its response."""
    if isinstance(step, LlmResponse):
        return step
    if isinstance(step, str):
        return _text_response(step)
    if isinstance(step, types.Part):
        return LlmResponse(content=types.Content(role="model", parts=[step]))
    return LlmResponse(content=step)


def _text_response(text: str, *, partial: bool | None = None) -> LlmResponse:
    return LlmResponse(content=types.Content(role="model", parts=[types.Part(text=text)]), partial=partial)


class _ScriptedConnection(BaseLlmConnection):
    """A live connection that replays the owning model's next step."""

    def __init__(self, owner: ScriptedLlm, llm_request: LlmRequest) -> None:
        self._owner = owner
        self._llm_request = llm_request

    async def send_history(self, history: list[types.Content]) -> None:
        """Accepts and ignores the history."""

    async def send_content(self, content: types.Content) -> None:
        """Accepts and ignores the content."""

    async def send_realtime(self, input: types.Blob) -> None:  # noqa: A002 - ADK's name.
        """Accepts and ignores realtime input."""

    async def receive(self) -> AsyncGenerator[LlmResponse, None]:
        """Yields the owning model's next step."""
        async for response in self._owner.generate_content_async(self._llm_request):
            yield response

    async def close(self) -> None:
        """Nothing to close."""
