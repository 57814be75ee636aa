"""The fake servers' heavy-tailed delay before the first chunk, which the tail-latency benchmark uses."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections import Counter

import pytest

from tests.fake_servers import Chunks, Error, FakeGemini, HeavyTailDelay, Text


def band(seconds: float) -> str:
    if 0.040 <= seconds <= 0.060:
        return "40-60 ms"
    if 0.300 <= seconds <= 0.600:
        return "300-600 ms"
    return "3 s" if seconds == 3.0 else f"unexpected {seconds}"


def test_heavy_tail_draws_90_percent_fast_9_percent_slow_and_1_percent_at_3_seconds():
    delay = HeavyTailDelay(seed=1)

    bands = Counter(band(delay()) for _ in range(20_000))

    assert set(bands) == {"40-60 ms", "300-600 ms", "3 s"}
    assert bands["40-60 ms"] / 20_000 == pytest.approx(0.90, abs=0.01)
    assert bands["300-600 ms"] / 20_000 == pytest.approx(0.09, abs=0.01)
    assert bands["3 s"] / 20_000 == pytest.approx(0.01, abs=0.005)


def test_the_same_seed_draws_the_same_delays_and_another_seed_others():
    first, same, other = HeavyTailDelay(seed=1), HeavyTailDelay(seed=1), HeavyTailDelay(seed=2)

    draws = [first() for _ in range(100)]

    assert draws == [same() for _ in range(100)]
    assert draws != [other() for _ in range(100)]


DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # Never through a proxy.


def post(url: str, *, stream: bool) -> int:
    method = "streamGenerateContent?alt=sse" if stream else "generateContent"
    request = urllib.request.Request(
        f"{url}/v1beta/models/m:{method}", data=json.dumps({}).encode(), method="POST"
    )
    try:
        with DIRECT.open(request, timeout=30) as response:
            response.read()
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


def test_the_server_waits_one_drawn_delay_before_each_answer_and_none_before_an_error():
    draws: list[float] = []

    def delay() -> float:
        draws.append(0.0)
        return 0.0

    server = FakeGemini(first_chunk_delay=delay).start()
    try:
        server.script("m", Text("hi"), Chunks("a", "b"), Error(503, "UNAVAILABLE"))
        statuses = [
            post(server.url, stream=False),
            post(server.url, stream=True),
            post(server.url, stream=False),
        ]
    finally:
        server.stop()

    assert statuses == [200, 200, 503]
    assert len(draws) == 2
