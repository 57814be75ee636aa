"""Tail latency against a heavy-tailed provider: no hedging, hedged requests, FastestFirst.

Runs the real ``google.adk.models.Gemini`` client, on google-genai's httpx
transport, against two local fault servers (``tests/fake_servers.py``), one
per key, each waiting a seeded heavy-tailed delay before the first chunk of
every answer (``HeavyTailDelay``: 90% 40-60 ms, 9% 300-600 ms, 1% 3 s), drawn
independently per server. Sends ``--requests`` requests, ``--concurrency`` at
a time, through each setup, and reports p50, p95, p99 and max of the time
each request takes to answer, how many took over 2 s, and the requests sent
beyond one per request.

Every setup gets fresh servers with the same seeds, so each sees the same
delays in the same order, and a :class:`~routed_llm.LatencyTracker` given to
``RoutedLlm(latency=...)``. A setup is a router and extra ``RoutedLlm``
options: the hedged rows add ``hedge_after=0.1`` (seconds) and
``hedge_after="p90"`` (each key's own recent p90, once it has 20 samples).
A hedge is a request sent beyond one per call, so "extra requests" counts
the hedges (and any failover).

Run ``python benchmarks/tail_latency.py`` (``--help`` for options). Every
client makes one attempt per call (``HttpRetryOptions(attempts=1)``).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import google.genai._api_client as genai_api_client
from google.adk.models import Gemini
from google.adk.models.llm_request import LlmRequest
from google.genai import Client, types

from routed_llm import METADATA_KEY, LatencyTracker, LlmRouter, RoutedLlm
from routed_llm.strategies import FallbackStrategy, FastestFirst
from tests.fake_servers import FakeGemini, HeavyTailDelay, Text

KEYS = ("a", "b")


@dataclass(frozen=True)
class Setup:
    """One row: a router built on the call's tracker, and more ``RoutedLlm`` options."""

    name: str
    router: Callable[[LatencyTracker], LlmRouter]
    options: Mapping[str, object] = field(default_factory=dict)


def fallback(latency: LatencyTracker) -> LlmRouter:
    return FallbackStrategy(list(KEYS))


def fastest_first(latency: LatencyTracker) -> LlmRouter:
    return FastestFirst(list(KEYS), latency=latency, seed=0)


SETUPS = (
    Setup("no hedging (FallbackStrategy)", fallback),
    Setup("hedge_after=0.1", fallback, {"hedge_after": 0.1}),
    Setup('hedge_after="p90"', fallback, {"hedge_after": "p90"}),
    Setup("FastestFirst", fastest_first),
)


def gemini(base_url: str, name: str) -> Gemini:
    """The real ADK Gemini model, one attempt per call, pointed at ``base_url``."""
    options = types.HttpOptions(base_url=base_url, retry_options=types.HttpRetryOptions(attempts=1))
    return Gemini(model=name, client=Client(api_key="benchmark-key", http_options=options))


def request(model: str) -> LlmRequest:
    return LlmRequest(
        model=model,
        contents=[types.Content(role="user", parts=[types.Part(text="What is the capital of France?")])],
        config=types.GenerateContentConfig(),
    )


async def answer(llm: RoutedLlm) -> tuple[float, str]:
    """Seconds to the end of one call, and the key that served it (or the error's name)."""
    started = time.perf_counter()
    served = "none"
    try:
        async for response in llm.generate_content_async(request(llm.model)):
            served = (response.custom_metadata or {}).get(METADATA_KEY, {}).get("key", served)
    except Exception as error:
        served = type(error).__name__
    return time.perf_counter() - started, served


async def measure(setup: Setup, requests: int, concurrency: int) -> str:
    servers = {key: FakeGemini(first_chunk_delay=HeavyTailDelay(seed=seed)) for seed, key in enumerate(KEYS)}
    for key, server in servers.items():
        server.start()
        server.script(key, *[Text("Paris.")] * (requests * 2))
    try:
        latency = LatencyTracker()
        llm = RoutedLlm(
            models={key: gemini(server.url, key) for key, server in servers.items()},
            router=setup.router(latency),
            latency=latency,
            **setup.options,  # type: ignore[arg-type]
        )
        pending = iter(range(requests))
        results: list[tuple[float, str]] = []

        async def worker() -> None:
            for _ in pending:
                results.append(await answer(llm))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        sent = sum(len(server.requests) for server in servers.values())
    finally:
        for server in servers.values():
            server.stop()
    seconds = [elapsed for elapsed, _ in results]
    cuts = statistics.quantiles(seconds, n=100, method="inclusive")
    served = Counter(by for _, by in results)  # A key, or the name of the error a request ended with.
    by_key = ", ".join(f"{by}: {count}" for by, count in sorted(served.items()))
    ms = [value * 1000 for value in (cuts[49], cuts[94], cuts[98], max(seconds))]
    over_2s = sum(1 for value in seconds if value > 2.0)
    extra = sent - requests
    return (
        f"| {setup.name} | {ms[0]:.0f} | {ms[1]:.0f} | {ms[2]:.0f} | {ms[3]:.0f} | {over_2s} "
        f"| {extra} ({extra / requests:.1%}) | {by_key} |"
    )


async def run(args: argparse.Namespace) -> str:
    rows = [await measure(setup, args.requests, args.concurrency) for setup in SETUPS]
    return "\n".join(
        [
            f"{args.requests} requests, {args.concurrency} concurrent, two keys with independent "
            "heavy-tailed delays (90% 40-60 ms, 9% 300-600 ms, 1% 3 s); real Gemini client on httpx",
            "",
            "| setup | p50 (ms) | p95 (ms) | p99 (ms) | max (ms) | over 2 s | extra requests | served by |",
            "|---|---:|---:|---:|---:|---:|---:|---|",
            *rows,
        ]
    )


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=20)
    args = parser.parse_args(argv)
    genai_api_client.has_aiohttp = False  # httpx, as google-genai picks it when aiohttp is absent.
    os.environ.setdefault("GOOGLE_API_KEY", "benchmark-key")
    logging.disable(logging.CRITICAL)
    try:
        table = asyncio.run(run(args))
    finally:
        logging.disable(logging.NOTSET)
    print(table)
    return table


if __name__ == "__main__":
    main()
