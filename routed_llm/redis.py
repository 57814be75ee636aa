"""Shared health and rate budgets on Redis, for an agent that runs as many replicas.

Needs the ``redis`` extra (``pip install "routed-llm[redis]"``, which brings
redis-py)::

    import redis.asyncio as redis
    from routed_llm import HealthTracker, Limit, RateLimits
    from routed_llm.redis import RedisStore

    store = RedisStore(redis.Redis.from_url("redis://localhost:6379/0"), namespace="support-bot")
    health = HealthTracker(failure_threshold=3, cooldown=30.0, store=store)
    limits = RateLimits({"pro": Limit(rpm=60)}, store=store)

Every change is atomic in Redis (a Lua script), and every record expires.
When Redis does not answer within ``timeout``, routed calls go on with each
process's own tracking (see the "Many replicas" page).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

from routed_llm.store import CircuitChange, StoreReading, check_key, check_namespace

__all__ = ["RedisStore"]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

BUDGET_TTL_MS = 120_000
"""How long a window's counts live: the window, and one more for clocks a little apart."""

SAMPLES_TTL_MS = 3_600_000
"""How long a key's latency samples live after the last one was added: an hour."""

# KEYS[1]: the circuit's hash. ARGV: op, now, failure_threshold, cooldown, max_cooldown,
# error_class, wait. The same rules as health._Rules, on the same fields. Times are epoch
# seconds. Returns the record after the change (a flat list) and whether a trial was granted.
_CIRCUIT_SCRIPT = """
local key = KEYS[1]
local op, now = ARGV[1], tonumber(ARGV[2])
local threshold, cooldown, max_cooldown = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local error_class, wait = ARGV[6], tonumber(ARGV[7])
local f = redis.call('HMGET', key, 'state', 'failures', 'opens', 'cooldown', 'until', 'trial')
local state = f[1] or 'closed'
local failures, opens = tonumber(f[2] or '0'), tonumber(f[3] or '0')
local length, till, trial = tonumber(f[4] or '0'), tonumber(f[5] or '0'), f[6] == '1'
if (state == 'open' or trial) and now >= till then
  if state == 'open' then state = 'half_open' else trial = false end
end
local function backoff()
  return math.min(cooldown * 2 ^ math.min(opens, 1000), max_cooldown)
end
local function open(seconds)
  state, failures, opens, length, till, trial = 'open', 0, opens + 1, seconds, now + seconds, false
end
local granted = 0
if op == 'acquire' then
  if state == 'half_open' and not trial then
    trial, till, granted = true, now + max_cooldown, 1
  end
elseif op == 'release' then
  trial = false
elseif op == 'succeed' then
  state, failures, opens, length, till, trial = 'closed', 0, 0, 0, 0, false
elseif op == 'fail' then
  if error_class == 'request' or state == 'open' then
    trial = false
  elseif error_class == 'provider' then
    open(max_cooldown)
  elseif wait > 0 then
    open(math.min(wait, max_cooldown))
  elseif state == 'half_open' then
    open(backoff())
  else
    failures = failures + 1
    if failures >= threshold then open(backoff()) end
  end
end
if state == 'closed' and failures == 0 then
  redis.call('DEL', key)
  return {{}, granted}
end
local record = {'state', state, 'failures', tostring(failures), 'opens', tostring(opens),
  'cooldown', tostring(length), 'until', tostring(till), 'trial', trial and '1' or '0'}
redis.call('HSET', key, unpack(record))
-- Outlives its cooldown or trial permit by two max_cooldowns, then a dead deployment's state is gone.
redis.call('PEXPIRE', key, math.ceil((math.max(till - now, 0) + 2 * max_cooldown) * 1000))
return {record, granted}
"""

# KEYS[1], KEYS[2]: the window's request and token counters. ARGV: rpm, tpm (0: none), ttl ms.
_RESERVE_SCRIPT = """
local rpm, tpm = tonumber(ARGV[1]), tonumber(ARGV[2])
if rpm > 0 and tonumber(redis.call('GET', KEYS[1]) or '0') >= rpm then return 0 end
if tpm > 0 and tonumber(redis.call('GET', KEYS[2]) or '0') >= tpm then return 0 end
redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""


class RedisStore:
    """Circuits and rate budgets shared through Redis (redis-py's ``redis.asyncio``).

    Records live under ``routed_llm:{<namespace>}:``: a hash per key whose
    circuit is not closed and clean, and two counters per limited key and
    minute. Only model keys, counts, circuit states and times are stored;
    nothing from a request. The namespace sits in a Redis Cluster hash tag,
    so one namespace's records share a slot.

    When Redis is unreachable or slower than ``timeout``, reads and changes
    give up, calls go on with each process's own tracking, and a warning is
    logged once per outage. The client reconnects by itself; until it does,
    the store tries Redis at most once every ``retry_interval`` seconds.

    Args:
        client: A ``redis.asyncio.Redis`` client. Each process (each event
            loop) needs its own.
        namespace: Shared by every replica of one deployment, e.g.
            ``"support-bot"``: 1-64 letters, digits, ``_``, ``.`` or ``-``.
        timeout: Seconds to wait for Redis on each trip.
        retry_interval: Seconds between attempts to reach Redis during an
            outage (0: try on every call).

    Raises:
        TypeError: If ``client`` is not an async redis-py client, or a number
            is not a number.
        ValueError: If ``namespace`` is not valid, or a number is not finite
            and positive (``retry_interval`` may be 0).
    """

    def __init__(
        self, client: Any, *, namespace: str, timeout: float = 0.05, retry_interval: float = 1.0
    ) -> None:
        import redis.asyncio  # The 'redis' extra; imported here so the core never needs it.

        if isinstance(client, redis.Redis) or not isinstance(client, redis.asyncio.Redis):
            raise TypeError(
                "RedisStore(client) takes an async redis-py client, redis.asyncio.Redis "
                f"(e.g. redis.asyncio.Redis.from_url(url)); got {type(client).__module__}."
                f"{type(client).__name__}."
            )
        self._namespace = check_namespace(namespace)
        self._timeout = _seconds("timeout", timeout, allow_zero=False)
        self._retry_interval = _seconds("retry_interval", retry_interval, allow_zero=True)
        self._client = client
        self._prefix = f"routed_llm:{{{namespace}}}:"
        self._circuit_script = client.register_script(_CIRCUIT_SCRIPT)
        self._reserve_script = client.register_script(_RESERVE_SCRIPT)
        self._down = False
        self._retry_at = 0.0
        self._background: set[asyncio.Task[None]] = set()

    @property
    def namespace(self) -> str:
        """The namespace every replica of one deployment shares."""
        return self._namespace

    @property
    def timeout(self) -> float:
        """Seconds to wait for Redis on each trip."""
        return self._timeout

    @property
    def available(self) -> bool:
        """False from a failed trip until the next one that succeeds."""
        return not self._down

    def check_key(self, key: str) -> None:
        """Raises ValueError if ``key`` cannot name a record (see :func:`~routed_llm.store.check_key`)."""
        check_key(key)

    async def read(self, circuits: Sequence[str], budgets: Sequence[str], window: int) -> StoreReading | None:
        """Reads circuits and budgets in one pipelined round trip; None if Redis did not answer."""

        async def trip() -> StoreReading:
            pipe = self._client.pipeline(transaction=False)
            for key in circuits:
                pipe.hgetall(self._circuit_key(key))
            if budgets:
                pipe.mget(
                    [self._requests_key(key, window) for key in budgets]
                    + [self._tokens_key(key, window) for key in budgets]
                )
            replies = await pipe.execute()
            found = {
                key: {_text(name): _text(value) for name, value in reply.items()}
                for key, reply in zip(circuits, replies, strict=False)
                if reply
            }
            counts = replies[len(circuits)] if budgets else []
            spent = {
                key: (_number(counts[index]), _number(counts[len(budgets) + index]))
                for index, key in enumerate(budgets)
            }
            return StoreReading(found, spent)

        return await self._guard(trip)

    async def change_circuit(self, key: str, change: CircuitChange) -> tuple[Mapping[str, str], bool] | None:
        """Runs the circuit script on ``key``'s record; None if Redis did not answer."""

        async def trip() -> tuple[Mapping[str, str], bool]:
            record, granted = await self._circuit_script(
                keys=[self._circuit_key(key)],
                args=[
                    change.op,
                    repr(change.now),
                    change.failure_threshold,
                    repr(change.cooldown),
                    repr(change.max_cooldown),
                    change.error_class,
                    repr(change.wait),
                ],
            )
            flat = [_text(item) for item in record]
            return dict(zip(flat[::2], flat[1::2], strict=True)), bool(granted)

        return await self._guard(trip)

    def change_circuit_later(self, key: str, change: CircuitChange) -> None:
        """Runs :meth:`change_circuit` in the background."""
        self._later(self.change_circuit(key, change))

    async def reserve(self, key: str, window: int, rpm: int | None, tpm: int | None) -> bool | None:
        """Runs the reservation script on the window's counters; None if Redis did not answer."""

        async def trip() -> bool:
            reply = await self._reserve_script(
                keys=[self._requests_key(key, window), self._tokens_key(key, window)],
                args=[rpm or 0, tpm or 0, BUDGET_TTL_MS],
            )
            return bool(reply)

        return await self._guard(trip)

    def spend_later(self, key: str, window: int, tokens: int) -> None:
        """Adds ``tokens`` to the window's token counter in the background (one pipelined trip)."""

        async def trip() -> None:
            pipe = self._client.pipeline(transaction=True)
            pipe.incrby(self._tokens_key(key, window), tokens)
            pipe.pexpire(self._tokens_key(key, window), BUDGET_TTL_MS)
            await pipe.execute()

        self._later(self._guard(trip))

    async def share_samples(
        self, new: Mapping[str, Sequence[float]], keys: Sequence[str], window: int
    ) -> Mapping[str, Sequence[float]] | None:
        """Appends ``new`` to capped lists, reads ``keys``' lists, in one transaction; None if no answer."""
        added = {key: samples for key, samples in new.items() if samples}

        async def trip() -> Mapping[str, Sequence[float]]:
            pipe = self._client.pipeline(transaction=True)
            for key, samples in added.items():
                pipe.rpush(self._samples_key(key), *(repr(float(sample)) for sample in samples))
                pipe.ltrim(self._samples_key(key), -window, -1)
                pipe.pexpire(self._samples_key(key), SAMPLES_TTL_MS)
            for key in keys:
                pipe.lrange(self._samples_key(key), -window, -1)
            replies = await pipe.execute()
            read = replies[3 * len(added) :]
            return {
                key: tuple(float(_text(sample)) for sample in reply)
                for key, reply in zip(keys, read, strict=True)
            }

        return await self._guard(trip)

    async def drain(self) -> None:
        """Waits for the background writes started so far (for tests, benchmarks and shutdown)."""
        while self._background:
            await asyncio.gather(*self._background)

    def _later(self, work: Awaitable[object]) -> None:
        async def run() -> None:
            await work

        task = asyncio.get_running_loop().create_task(run())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _guard(self, trip: Callable[[], Awaitable[_T]]) -> _T | None:
        """Makes one trip within the timeout; on any failure notes the outage and returns None."""
        loop = asyncio.get_running_loop()
        if self._down and loop.time() < self._retry_at:
            return None
        try:
            async with asyncio.timeout(self._timeout):
                result = await trip()
        except Exception as error:
            self._retry_at = loop.time() + self._retry_interval
            if not self._down:
                self._down = True
                logger.warning(
                    "Redis store %r did not answer (%s: %s); health and budgets are tracked in each "
                    "process until it does.",
                    self._namespace,
                    type(error).__name__,
                    error,
                )
            return None
        if self._down:
            self._down = False
            logger.info("Redis store %r answers again; health and budgets are shared.", self._namespace)
        return result

    def _circuit_key(self, key: str) -> str:
        return f"{self._prefix}circuit:{key}"

    def _requests_key(self, key: str, window: int) -> str:
        return f"{self._prefix}requests:{key}:{window}"

    def _tokens_key(self, key: str, window: int) -> str:
        return f"{self._prefix}tokens:{key}:{window}"

    def _samples_key(self, key: str) -> str:
        return f"{self._prefix}latency:{key}"


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _number(value: object) -> int:
    return 0 if value is None else int(_text(value))


def _seconds(name: str, value: object, *, allow_zero: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"RedisStore({name}=...) is a number of seconds; got {type(value).__name__}.")
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = "0 or more" if allow_zero else "above 0"
        raise ValueError(f"RedisStore({name}={value!r}) must be a finite number of seconds, {bound}.")
    return float(value)
