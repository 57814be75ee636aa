"""Overhead of RoutedLlm against a direct call and ADK's FallbackModel.

Every variant serves the same requests from the same models, in one process
and one event loop, side by side:

1. Time per call. The no-op model builds a fresh one-part response per call,
   the least any real model does. Two paths: *success* (the first model
   answers) and *failover* (the first raises a 503 ``ServerError`` before any
   output and the second answers; FallbackModel only falls back on such a
   status).
2. Where the success path's time goes at 1 content: the request snapshot,
   stamping the response, the extra async generator layer, and the rest of
   the router loop, each timed on its own.
3. Memory per in-flight call: ``tracemalloc`` over many concurrent calls, each
   holding its own request (built while tracing, so it counts) and waiting in
   its model on an event, until every call is waiting.
4. Time per streamed chunk: a model yields a stream of prebuilt chunks; the
   cost per chunk is the difference from iterating the model directly.

Run ``python benchmarks/overhead.py`` (``--help`` for options). The whole
measurement runs ``--runs`` times; each figure is the median of the runs, and
ratios are taken within a run, so load on a shared machine hits both sides.
Within a run, times are the best of several samples (as ``timeit`` advises:
noise only ever adds time). Logging is disabled while measuring: the
failover path logs a warning per call in both libraries, and a log handler's
cost is not routing's.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import statistics
import time
import tracemalloc
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
from routed_llm.rollback import RequestSnapshot
from routed_llm.routing import RoutedCall


def ok_response() -> LlmResponse:
    """The response NoOpLlm yields."""
    return LlmResponse(content=types.Content(role="model", parts=[types.Part(text="ok")]))


class NoOpLlm(BaseLlm):
    """Answers every call at once with a fresh one-part response."""

    async def generate_content_async(
        self, llm_request: LlmRequest, stream: bool = False
    ) -> AsyncGenerator[LlmResponse, None]:
        yield ok_response()


class UnavailableLlm(BaseLlm):
    """Fails every call before any output, as an overloaded Gemini does."""

    async def generate_content_async(
        self, llm_request: LlmRequest, stream: bool = False
    ) -> AsyncGenerator[LlmResponse, None]:
        raise errors.ServerError(
            503, {"error": {"code": 503, "message": "overloaded", "status": "UNAVAILABLE"}}
        )
        yield  # pragma: no cover


class PassThroughLlm(BaseLlm):
    """Yields what its inner model yields: one async generator layer, nothing else."""

    inner: BaseLlm

    async def generate_content_async(
        self, llm_request: LlmRequest, stream: bool = False
    ) -> AsyncGenerator[LlmResponse, None]:
        async for response in self.inner.generate_content_async(llm_request, stream):
            yield response


class WaitingLlm(BaseLlm):
    """Counts the calls waiting in it, then answers once ``gate`` is set."""

    gate: asyncio.Event
    all_waiting: asyncio.Event
    expected: int
    waiting: int = 0

    async def generate_content_async(
        self, llm_request: LlmRequest, stream: bool = False
    ) -> AsyncGenerator[LlmResponse, None]:
        self.waiting += 1
        if self.waiting == self.expected:
            self.all_waiting.set()
        await self.gate.wait()
        yield ok_response()


class StreamingLlm(BaseLlm):
    """Yields the same prebuilt chunks on every call."""

    chunks: list[LlmResponse]

    async def generate_content_async(
        self, llm_request: LlmRequest, stream: bool = False
    ) -> AsyncGenerator[LlmResponse, None]:
        for chunk in self.chunks:
            yield chunk


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
    return side_by_side(first, NoOpLlm(model="second"), direct=not failover)


def side_by_side(first: BaseLlm, second: BaseLlm, *, direct: bool = True) -> dict[str, BaseLlm]:
    """``first`` called directly (else ``second``), and both behind RoutedLlm and FallbackModel."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # FallbackModel is experimental and says so.
        fallback_model = FallbackModel(models=[first, second])
    return {
        "direct": first if direct else second,
        "RoutedLlm": RoutedLlm(models={"first": first, "second": second}, router=in_order),
        "FallbackModel": fallback_model,
    }


async def time_calls(llm: BaseLlm, requests: list[LlmRequest]) -> float:
    """Mean microseconds per call over one call per request.

    The requests are built beforehand and shared by every variant and sample:
    none of the models here edits a request, and RoutedLlm restores any edit.
    """
    start = time.perf_counter_ns()
    for request in requests:
        async for _ in llm.generate_content_async(request):
            pass
    return (time.perf_counter_ns() - start) / len(requests) / 1000


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
            requests = [make_request(contents) for _ in range(iterations)]
            samples: dict[str, list[float]] = {name: [] for name in models}
            for _ in range(repeats):
                for name, llm in models.items():  # Interleaved, so drift hits all alike.
                    samples[name].append(await time_calls(llm, requests))
            rows.append(
                Row(
                    path="failover" if failover else "success",
                    contents=contents,
                    micros={name: min(values) for name, values in samples.items()},
                )
            )
    return rows


def best_micros(action: Callable[[], object], inputs: int, repeats: int) -> float:
    """Best-of-``repeats`` microseconds per call of ``action``, ``inputs`` calls a sample."""
    samples = []
    for _ in range(repeats):
        start = time.perf_counter_ns()
        for _ in range(inputs):
            action()
        samples.append((time.perf_counter_ns() - start) / inputs / 1000)
    return min(samples)


async def breakdown(iterations: int, repeats: int) -> dict[str, float]:
    """Microseconds of the 1-content success path: each part timed on its own."""
    noop = NoOpLlm(model="first")
    layer = PassThroughLlm(model="layer", inner=noop)
    routed = side_by_side(noop, NoOpLlm(model="second"))["RoutedLlm"]
    totals: dict[str, list[float]] = {"direct": [], "layer": [], "RoutedLlm": []}
    requests = [make_request(1) for _ in range(iterations)]
    for _ in range(repeats):
        for name, llm in (("direct", noop), ("layer", layer), ("RoutedLlm", routed)):
            totals[name].append(await time_calls(llm, requests))
    direct, routed_total = min(totals["direct"]), min(totals["RoutedLlm"])
    snapshot = best_micros(partial(RequestSnapshot.take, requests[0]), iterations, repeats)
    long_snapshot = best_micros(partial(RequestSnapshot.take, make_request(50)), iterations, repeats)
    response = ok_response()
    route = {"key": "first", "model": "first", "failed_keys": [], "errors": {}, "attempts": 1}
    stamp = best_micros(lambda: RoutedCall.stamp(response, route), iterations, repeats)
    layer_cost = min(totals["layer"]) - direct
    overhead = routed_total - direct
    return {
        "direct": direct,
        "RoutedLlm": routed_total,
        "request snapshot": snapshot,
        "stamping the response": stamp,
        "async generator layer": layer_cost,
        "router loop and the rest": overhead - snapshot - stamp - layer_cost,
        "snapshot at 50 contents": long_snapshot,
    }


async def in_flight_bytes(llm: BaseLlm, waiting: WaitingLlm, calls: int, contents: int) -> float:
    """Bytes traced per call while ``calls`` calls, each with its own request, wait in ``waiting``."""
    waiting.waiting, waiting.expected = 0, calls
    waiting.gate.clear()
    waiting.all_waiting.clear()
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tasks = [asyncio.create_task(drain(llm, make_request(contents))) for _ in range(calls)]
        await waiting.all_waiting.wait()
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    waiting.gate.set()
    await asyncio.gather(*tasks)
    return used / calls


async def drain(llm: BaseLlm, request: LlmRequest) -> None:
    async for _ in llm.generate_content_async(request):
        pass


async def memory(calls: int, contents: int) -> dict[str, float]:
    """Bytes per in-flight call (and of the request alone), by variant."""
    waiting = WaitingLlm(model="first", gate=asyncio.Event(), all_waiting=asyncio.Event(), expected=calls)
    models = side_by_side(waiting, NoOpLlm(model="second"))
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    requests = [make_request(contents) for _ in range(calls)]
    result = {"request alone": (tracemalloc.get_traced_memory()[0] - before) / calls}
    tracemalloc.stop()
    del requests
    for name, llm in models.items():
        result[name] = await in_flight_bytes(llm, waiting, calls, contents)
    return result


async def streaming(chunks: int, streams: int, repeats: int) -> dict[str, float]:
    """Microseconds per chunk over a ``chunks``-chunk stream, by variant."""
    prebuilt = [
        LlmResponse(content=types.Content(role="model", parts=[types.Part(text=f"t{index} ")]), partial=True)
        for index in range(chunks)
    ]
    models = side_by_side(StreamingLlm(model="first", chunks=prebuilt), NoOpLlm(model="second"))
    samples: dict[str, list[float]] = {name: [] for name in models}
    requests = [make_request(1) for _ in range(streams)]
    for _ in range(repeats):
        for name, llm in models.items():
            samples[name].append(await time_calls(llm, requests) / chunks)
    return {name: min(values) for name, values in samples.items()}


@dataclass(frozen=True)
class Run:
    rows: list[Row]
    parts: dict[str, float]
    bytes_per_call: dict[str, float]
    per_chunk: dict[str, float]


async def run_once(args: argparse.Namespace) -> Run:
    return Run(
        rows=await measure(args.iterations, args.repeats),
        parts=await breakdown(args.iterations, args.repeats),
        bytes_per_call=await memory(args.calls, args.contents),
        per_chunk=await streaming(args.chunks, args.streams, args.repeats),
    )


def report(runs: list[Run], args: argparse.Namespace) -> str:
    first = runs[0]
    lines = [
        f"Median of {len(runs)} runs; ratios are taken within each run.",
        "",
        "1. Time per call",
        "",
        "| path | contents | direct (us) | RoutedLlm (us) | FallbackModel (us) "
        "| RoutedLlm / direct | RoutedLlm overhead / FallbackModel overhead |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for index, row in enumerate(first.rows):
        same = [run.rows[index] for run in runs]
        micros = {name: statistics.median([r.micros[name] for r in same]) for name in row.micros}
        ratio = statistics.median([r.micros["RoutedLlm"] / r.micros["direct"] for r in same])
        share = statistics.median([r.overhead("RoutedLlm") / r.overhead("FallbackModel") for r in same])
        lines.append(
            f"| {row.path} | {row.contents} | {micros['direct']:.1f} | {micros['RoutedLlm']:.1f} "
            f"| {micros['FallbackModel']:.1f} | {ratio:.2f}x | {share:.0%} |"
        )
    parts = {name: statistics.median([run.parts[name] for run in runs]) for name in first.parts}
    overhead = parts["RoutedLlm"] - parts["direct"]
    lines += [
        "",
        f"2. The success path at 1 content: direct {parts['direct']:.1f} us, RoutedLlm "
        f"{parts['RoutedLlm']:.1f} us, overhead {overhead:.1f} us",
        "",
        "| part | us per call | share of the overhead |",
        "|---|---:|---:|",
    ]
    for name, value in parts.items():
        if name not in ("direct", "RoutedLlm", "snapshot at 50 contents"):
            lines.append(f"| {name} | {value:.1f} | {value / overhead:.0%} |")
    lines += ["", f"The request snapshot at 50 contents: {parts['snapshot at 50 contents']:.1f} us."]
    ratio = {
        name: statistics.median([run.bytes_per_call[name] / run.bytes_per_call["direct"] for run in runs])
        for name in ("RoutedLlm", "FallbackModel")
    }
    kib = {
        name: statistics.median([run.bytes_per_call[name] / 1024 for run in runs])
        for name in first.bytes_per_call
    }
    lines += [
        "",
        f"3. Memory per in-flight call, {args.calls} concurrent calls of {args.contents} contents",
        "",
        "| request alone (KiB) | direct (KiB) | RoutedLlm (KiB) | FallbackModel (KiB) "
        "| RoutedLlm / direct | FallbackModel / direct |",
        "|---:|---:|---:|---:|---:|---:|",
        f"| {kib['request alone']:.1f} | {kib['direct']:.1f} | {kib['RoutedLlm']:.1f} "
        f"| {kib['FallbackModel']:.1f} | {ratio['RoutedLlm']:.2f}x | {ratio['FallbackModel']:.2f}x |",
    ]
    chunk = {name: statistics.median([run.per_chunk[name] for run in runs]) for name in first.per_chunk}
    extra = {
        name: statistics.median([run.per_chunk[name] - run.per_chunk["direct"] for run in runs])
        for name in ("RoutedLlm", "FallbackModel")
    }
    lines += [
        "",
        f"4. Streaming, {args.chunks} chunks a stream",
        "",
        "| direct (us/chunk) | RoutedLlm (us/chunk) | FallbackModel (us/chunk) "
        "| RoutedLlm overhead (us/chunk) | FallbackModel overhead (us/chunk) |",
        "|---:|---:|---:|---:|---:|",
        f"| {chunk['direct']:.2f} | {chunk['RoutedLlm']:.2f} | {chunk['FallbackModel']:.2f} "
        f"| {extra['RoutedLlm']:.2f} | {extra['FallbackModel']:.2f} |",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=2000, help="calls per timing sample")
    parser.add_argument("--repeats", type=int, default=7, help="timing samples per variant (best taken)")
    parser.add_argument("--runs", type=int, default=3, help="whole measurements (median reported)")
    parser.add_argument("--calls", type=int, default=10_000, help="concurrent calls for the memory figure")
    parser.add_argument("--contents", type=int, default=20, help="contents per request for the memory figure")
    parser.add_argument("--chunks", type=int, default=1000, help="chunks per stream")
    parser.add_argument("--streams", type=int, default=20, help="streams per timing sample")
    args = parser.parse_args(argv)
    logging.disable(logging.CRITICAL)
    try:
        runs = [asyncio.run(run_once(args)) for _ in range(args.runs)]
    finally:
        logging.disable(logging.NOTSET)
    table = report(runs, args)
    print(table)
    return table


if __name__ == "__main__":
    main()
