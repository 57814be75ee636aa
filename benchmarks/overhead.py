"""Per-call overhead of RoutedLlm against a direct call and ADK's FallbackModel.

Every variant serves the same requests from the same no-op model, in one
process and one event loop. The no-op model builds a fresh one-part response
per call, the least any real model does. Two paths are measured:

* success: the first model answers;
* failover: the first model raises a 503 ``ServerError`` before any output
  and the second answers (FallbackModel only falls back on such a status).

Run ``python benchmarks/overhead.py`` (``--help`` for options). Figures are
the best of several repeats (as ``timeit`` advises: noise only ever adds
time), in microseconds per call. Logging is disabled while measuring: the
failover path logs a warning per call in both libraries, and a log handler's
cost is not routing's.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
import warnings
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from functools import partial

from google.adk.models import FallbackModel
from google.adk.models.base_llm import BaseLlm
from google.adk.models.llm_request import LlmRequest
from google.adk.models.llm_response import LlmResponse
from google.genai import errors, types

from routed_llm import RoutedLlm


class NoOpLlm(BaseLlm):
    """Answers every call at once with a fresh one-part response."""

    async def generate_content_async(
        self, llm_request: LlmRequest, stream: bool = False
    ) -> AsyncGenerator[LlmResponse, None]:
        yield LlmResponse(content=types.Content(role="model", parts=[types.Part(text="ok")]))


class UnavailableLlm(BaseLlm):
    """Fails every call before any output, as an overloaded Gemini does."""

    async def generate_content_async(
        self, llm_request: LlmRequest, stream: bool = False
    ) -> AsyncGenerator[LlmResponse, None]:
        raise errors.ServerError(
            503, {"error": {"code": 503, "message": "overloaded", "status": "UNAVAILABLE"}}
        )
        yield  # pragma: no cover


def make_request(contents: int) -> LlmRequest:
    return LlmRequest(
        model="noop",
        contents=[
            types.Content(
                role="user" if index % 2 == 0 else "model",
                parts=[types.Part(text=f"Turn {index}: " + "some conversation text " * 10)],
            )
            for index in range(contents)
        ],
        config=types.GenerateContentConfig(
            system_instruction="You are a helpful assistant.",
            temperature=0.2,
            labels={"adk_agent_name": "assistant"},
        ),
    )


def in_order(models, llm_request, error_context):
    if error_context is None:
        return "first"
    return "second" if "second" not in error_context.failed_keys else None


def variants(failover: bool) -> dict[str, BaseLlm]:
    first: BaseLlm = UnavailableLlm(model="first") if failover else NoOpLlm(model="first")
    second = NoOpLlm(model="second")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # FallbackModel is experimental and says so.
        fallback_model = FallbackModel(models=[first, second])
    return {
        "direct": second if failover else first,
        "RoutedLlm": RoutedLlm(models={"first": first, "second": second}, router=in_order),
        "FallbackModel": fallback_model,
    }


async def time_calls(llm: BaseLlm, request_factory: Callable[[], LlmRequest], iterations: int) -> float:
    """Mean microseconds per call over ``iterations`` calls (requests prebuilt)."""
    requests = [request_factory() for _ in range(iterations)]
    start = time.perf_counter_ns()
    for request in requests:
        async for _ in llm.generate_content_async(request):
            pass
    return (time.perf_counter_ns() - start) / iterations / 1000


@dataclass(frozen=True)
class Row:
    path: str
    contents: int
    micros: dict[str, float]

    def overhead(self, name: str) -> float:
        return self.micros[name] - self.micros["direct"]


async def measure(iterations: int, repeats: int) -> list[Row]:
    rows = []
    for failover in (False, True):
        for contents in (1, 50):
            models = variants(failover)
            samples: dict[str, list[float]] = {name: [] for name in models}
            for _ in range(repeats):
                for name, llm in models.items():  # Interleaved, so drift hits all alike.
                    samples[name].append(await time_calls(llm, partial(make_request, contents), iterations))
            rows.append(
                Row(
                    path="failover" if failover else "success",
                    contents=contents,
                    micros={name: min(values) for name, values in samples.items()},
                )
            )
    return rows


def report(rows: list[Row]) -> str:
    lines = [
        "| path | contents | direct (us) | RoutedLlm (us) | FallbackModel (us) "
        "| RoutedLlm / direct | RoutedLlm overhead / FallbackModel overhead |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        ratio = row.micros["RoutedLlm"] / row.micros["direct"]
        share = row.overhead("RoutedLlm") / row.overhead("FallbackModel")
        lines.append(
            f"| {row.path} | {row.contents} | {row.micros['direct']:.1f} | {row.micros['RoutedLlm']:.1f} "
            f"| {row.micros['FallbackModel']:.1f} | {ratio:.2f}x | {share:.0%} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=2000, help="calls per timing sample")
    parser.add_argument("--repeats", type=int, default=7, help="timing samples per variant (best taken)")
    args = parser.parse_args(argv)
    logging.disable(logging.CRITICAL)
    try:
        table = report(asyncio.run(measure(args.iterations, args.repeats)))
    finally:
        logging.disable(logging.NOTSET)
    print(table)
    return table


if __name__ == "__main__":
    main()
