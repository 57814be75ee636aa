"""What a stalled or dead primary costs, with and without time limits and health.

Runs the real ``google.adk.models.Gemini`` client against the project's local
fault-injecting server (``tests/fake_servers.py``), on the google-genai HTTP
transport named by ``--transport`` (httpx or aiohttp), side by side in one
process:

(a) A stalled primary (it accepts the request and never answers), 20
    concurrent requests: the time each takes to answer, through RoutedLlm
    with ``first_response_timeout``, plain RoutedLlm and ADK's
    ``FallbackModel``, the last two relying on the client's own timeout.
(b) A primary that refuses connections, sequential requests through
    ``FallbackStrategy``: mean and p99 latency, and how many attempts reached
    the dead primary, with and without a ``HealthTracker``, beside calling the
    backup directly and ``FallbackModel``.

(c) What google-genai's default retries cost: a primary that refuses
    connections, sequential requests through ``FallbackStrategy``, the
    primary given as a model-name string, as ``Gemini(model=...)``, and as
    ``Gemini(model=..., retry_options=HttpRetryOptions(attempts=1))``: the
    time each call takes to reach the backup and answer.

Run ``python benchmarks/resilience.py`` (``--help`` for options). Apart from
(c)'s first two variants, every client makes one attempt per call
(``HttpRetryOptions(attempts=1)``), as ``docs/providers.md`` recommends:
genai's own retries would hide what routing does.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import google.genai._api_client as genai_api_client
from google.adk.models import FallbackModel, Gemini
from google.adk.models.base_llm import BaseLlm
from google.adk.models.llm_request import LlmRequest
from google.genai import Client, types

from routed_llm import HealthTracker, RoutedLlm
from routed_llm.strategies import FallbackStrategy
from tests.fake_servers import ClosedPort, FakeGemini, Stall, Text


def gemini(base_url: str, name: str, *, timeout_s: float | None = None, cls: type[Gemini] = Gemini) -> Gemini:
    """The real ADK Gemini model, one attempt per call, pointed at ``base_url``."""
    options = types.HttpOptions(
        base_url=base_url,
        timeout=None if timeout_s is None else int(timeout_s * 1000),
        retry_options=types.HttpRetryOptions(attempts=1),
    )
    return cls(model=name, client=Client(api_key="benchmark-key", http_options=options))


def request(model: str) -> LlmRequest:
    return LlmRequest(
        model=model,
        contents=[types.Content(role="user", parts=[types.Part(text="What is the capital of France?")])],
        config=types.GenerateContentConfig(),
    )


def fallback_model(primary: BaseLlm, backup: BaseLlm) -> BaseLlm:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # FallbackModel is experimental and says so.
        return FallbackModel(models=[primary, backup])


async def answer(llm: BaseLlm) -> tuple[float, str]:
    """Seconds to the end of one call, and how it ended."""
    started = time.perf_counter()
    try:
        async for _ in llm.generate_content_async(request(llm.model)):
            pass
        outcome = "answered"
    except Exception as error:
        outcome = type(error).__name__
    return time.perf_counter() - started, outcome


def summary(samples: list[tuple[float, str]]) -> str:
    seconds = sorted(s for s, _ in samples)
    outcomes = sorted({o for _, o in samples})
    p99 = seconds[min(len(seconds) - 1, round(0.99 * (len(seconds) - 1)))]
    return f"{statistics.mean(seconds) * 1000:.1f} | {p99 * 1000:.1f} | {', '.join(outcomes)}"


async def stalled_primary(requests: int, client_timeout: float, first_response: float) -> list[str]:
    server = FakeGemini().start()
    try:
        variants: dict[str, Callable[[], BaseLlm]] = {
            f"RoutedLlm, first_response_timeout={first_response:g}": lambda: RoutedLlm(
                models={
                    "primary": gemini(server.url, "primary", timeout_s=client_timeout),
                    "backup": gemini(server.url, "backup", timeout_s=client_timeout),
                },
                router=FallbackStrategy(["primary", "backup"]),
                first_response_timeout=first_response,
            ),
            f"RoutedLlm, client timeout {client_timeout:g} s": lambda: RoutedLlm(
                models={
                    "primary": gemini(server.url, "primary", timeout_s=client_timeout),
                    "backup": gemini(server.url, "backup", timeout_s=client_timeout),
                },
                router=FallbackStrategy(["primary", "backup"]),
            ),
            f"FallbackModel, client timeout {client_timeout:g} s": lambda: fallback_model(
                gemini(server.url, "primary", timeout_s=client_timeout),
                gemini(server.url, "backup", timeout_s=client_timeout),
            ),
        }
        rows = []
        for name, build in variants.items():
            server.script("primary", *[Stall()] * requests)
            server.script("backup", *[Text("Paris.")] * requests)
            llm = build()
            samples = await asyncio.gather(*(answer(llm) for _ in range(requests)))
            rows.append(f"| {name} | {summary(list(samples))} |")
        return rows
    finally:
        server.stop()


async def dead_primary(requests: int, cooldown: float) -> list[str]:
    server = FakeGemini().start()
    dead = ClosedPort().url
    try:
        rows = []
        variants: dict[str, Callable[[], tuple[BaseLlm, Callable[[], int]]]] = {}

        def routed(health: HealthTracker | None) -> tuple[BaseLlm, Callable[[], int]]:
            counter = gemini(dead, "primary", cls=CountingGemini)
            llm = RoutedLlm(
                models={"primary": counter, "backup": gemini(server.url, "backup")},
                router=FallbackStrategy(["primary", "backup"]),
                health=health,
            )
            return llm, counter.attempts  # type: ignore[attr-defined]

        def direct() -> tuple[BaseLlm, Callable[[], int]]:
            return gemini(server.url, "backup"), lambda: 0

        def fallback() -> tuple[BaseLlm, Callable[[], int]]:
            counter = gemini(dead, "primary", cls=CountingGemini)
            return fallback_model(counter, gemini(server.url, "backup")), counter.attempts  # type: ignore[attr-defined]

        variants["backup called directly"] = direct
        variants["RoutedLlm, no health"] = lambda: routed(None)
        variants[f"RoutedLlm + HealthTracker(failure_threshold=3, cooldown={cooldown:g})"] = lambda: routed(
            HealthTracker(failure_threshold=3, cooldown=cooldown)
        )
        variants["FallbackModel"] = fallback
        for name, build in variants.items():
            server.script("backup", *[Text("Paris.")] * requests)
            llm, attempts = build()
            samples = [await answer(llm) for _ in range(requests)]
            rows.append(f"| {name} | {summary(samples)} | {attempts()} |")
        return rows
    finally:
        server.stop()


async def default_retries(requests: int) -> list[str]:
    """A dead primary's cost per call, with google-genai's default retries and with one attempt."""
    server = FakeGemini().start()
    dead = ClosedPort().url
    name = "gemini-2.5-flash"
    variants: dict[str, Callable[[], BaseLlm | str]] = {
        f"model name {name!r} (genai's default retries)": lambda: name,
        f"Gemini(model={name!r}) (genai's default retries)": lambda: Gemini(model=name, base_url=dead),
        f"Gemini(model={name!r}, retry_options=HttpRetryOptions(attempts=1))": lambda: Gemini(
            model=name, base_url=dead, retry_options=types.HttpRetryOptions(attempts=1)
        ),
    }
    base_url = os.environ.get("GOOGLE_GEMINI_BASE_URL")
    os.environ["GOOGLE_GEMINI_BASE_URL"] = dead  # Where a model name's client connects.
    try:
        rows = []
        for label, build in variants.items():
            server.script("backup", *[Text("Paris.")] * requests)
            llm = RoutedLlm(
                models={"primary": build(), "backup": gemini(server.url, "backup")},
                router=FallbackStrategy(["primary", "backup"]),
            )
            samples = [await answer(llm) for _ in range(requests)]
            seconds = [s for s, _ in samples]
            rows.append(
                f"| {label} | {summary(samples)} | {min(seconds) * 1000:.1f} | {max(seconds) * 1000:.1f} |"
            )
        return rows
    finally:
        if base_url is None:
            del os.environ["GOOGLE_GEMINI_BASE_URL"]
        else:
            os.environ["GOOGLE_GEMINI_BASE_URL"] = base_url
        server.stop()


class CountingGemini(Gemini):
    """The real Gemini model, counting the calls that reach it."""

    calls: int = 0

    async def generate_content_async(self, llm_request, stream=False):  # type: ignore[no-untyped-def]
        self.calls += 1
        async for response in super().generate_content_async(llm_request, stream):
            yield response

    def attempts(self) -> int:
        return self.calls


async def run(args: argparse.Namespace) -> str:
    stalled = await stalled_primary(args.stalled_requests, args.client_timeout, args.first_response_timeout)
    dead = await dead_primary(args.dead_requests, args.cooldown)
    retries = await default_retries(args.default_retry_requests)
    return "\n".join(
        [
            f"transport: {args.transport}",
            "",
            f"(a) stalled primary, {args.stalled_requests} concurrent requests",
            "",
            "| variant | mean (ms) | p99 (ms) | outcome |",
            "|---|---:|---:|---|",
            *stalled,
            "",
            f"(b) primary refusing connections, {args.dead_requests} sequential requests",
            "",
            "| variant | mean (ms) | p99 (ms) | outcome | attempts on the dead primary |",
            "|---|---:|---:|---|---:|",
            *dead,
            "",
            f"(c) primary refusing connections, {args.default_retry_requests} sequential requests: "
            "google-genai's default retries",
            "",
            "| primary | mean (ms) | p99 (ms) | outcome | min (ms) | max (ms) |",
            "|---|---:|---:|---|---:|---:|",
            *retries,
        ]
    )


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transport", choices=["httpx", "aiohttp"], default="httpx")
    parser.add_argument("--stalled-requests", type=int, default=20)
    parser.add_argument("--client-timeout", type=float, default=30.0, help="the client's own timeout (s)")
    parser.add_argument("--first-response-timeout", type=float, default=1.0)
    parser.add_argument("--dead-requests", type=int, default=200)
    parser.add_argument("--cooldown", type=float, default=30.0)
    parser.add_argument("--default-retry-requests", type=int, default=10)
    args = parser.parse_args(argv)
    genai_api_client.has_aiohttp = args.transport == "aiohttp"  # How genai itself picks its transport.
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
