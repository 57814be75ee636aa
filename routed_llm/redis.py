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
import os
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import Any, TypeVar

from routed_llm.store import (
    BudgetChange,
    BudgetReading,
    CircuitChange,
    CircuitReading,
    check_key,
    check_namespace,
)

__all__ = ["RedisStore"]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

BUDGET_TTL_MS = 120_000
"""How long a window's counts live: the window, and one more for clocks a little apart."""

SAMPLES_TTL_MS = 3_600_000
"""How long a key's latency samples live after the last one was added: an hour."""

# The server's clock: every time written or compared in Redis is Redis's, never a replica's.
_NOW = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
"""

# A record of the wrong type (written by something else) is reported, and only affects its own key.
_KIND = """
local function kind(key)
  local reply = redis.call('TYPE', key)
  return type(reply) == 'table' and reply.ok or reply
end
"""

# KEYS[1]: the circuit's hash. ARGV: op, failure_threshold, cooldown, max_cooldown, trial_timeout,
# permit, error_class, wait, age. The same rules as health._Rules, on the same fields, on Redis's
# clock. Returns the record after the change (a flat list), whether a trial was granted, the
# server's TIME (seconds, microseconds) and whether the stored record was unreadable.
_CIRCUIT_SCRIPT = (
    _NOW
    + _KIND
    + """
local key = KEYS[1]
local op = ARGV[1]
local threshold, cooldown, max_cooldown = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local trial_timeout, permit, error_class = tonumber(ARGV[5]), ARGV[6], ARGV[7]
local wait, age = tonumber(ARGV[8]), tonumber(ARGV[9])
local bad = 0
local found = kind(key)
if found ~= 'hash' and found ~= 'none' then
  redis.call('DEL', key)
  bad = 1
end
local f = redis.call('HMGET', key, 'state', 'failures', 'opens', 'cooldown', 'until', 'trial', 'changed')
local state, trial = f[1] or 'closed', f[6] or ''
local failures, opens = tonumber(f[2] or '0'), tonumber(f[3] or '0')
local length, till, changed = tonumber(f[4] or '0'), tonumber(f[5] or '0'), tonumber(f[7] or '0')
if not (failures and opens and length and till and changed)
    or (state ~= 'closed' and state ~= 'open' and state ~= 'half_open') then
  state, failures, opens, length, till, trial, changed = 'closed', 0, 0, 0, 0, '', 0
  bad = 1
end
local function reply(record, granted)
  return {record, granted, clock[1], clock[2], bad}
end
local function flat()
  return {'state', state, 'failures', tostring(failures), 'opens', tostring(opens),
    'cooldown', tostring(length), 'until', tostring(till), 'trial', trial, 'changed', tostring(changed)}
end
if age > 0 and now - age < changed then
  -- Told late, and the record changed after it happened: newer knowledge wins.
  if state == 'closed' and failures == 0 then return reply({}, 0) end
  return reply(flat(), 0)
end
if state == 'open' and now >= till then state = 'half_open' end
if trial ~= '' and now >= till then trial = '' end
local function backoff()
  return math.min(cooldown * 2 ^ math.min(opens, 1000), max_cooldown)
end
-- A cooldown runs from when its failure happened: one told late has less of it left, or none.
local function open(seconds)
  state, failures, opens, length, till, trial = 'open', 0, opens + 1, seconds, now - age + seconds, ''
end
local granted = 0
if op == 'acquire' then
  if state == 'half_open' and trial == '' then
    trial, till, granted = permit, now + trial_timeout, 1
  end
elseif op == 'release' then
  if trial == permit then trial = '' end
elseif op == 'succeed' then
  state, failures, opens, length, till, trial = 'closed', 0, 0, 0, 0, ''
elseif op == 'fail' then
  if error_class == 'request' or state == 'open' then
    if trial == permit then trial = '' end
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
if state == 'open' and now >= till then state = 'half_open' end
changed = now
if state == 'closed' and failures == 0 then
  redis.call('DEL', key)
  return reply({}, granted)
end
local record = flat()
redis.call('HSET', key, unpack(record))
-- Outlives its cooldown or trial permit by two max_cooldowns, then a dead deployment's state is gone.
redis.call('PEXPIRE', key, math.ceil((math.max(till - now, 0) + 2 * max_cooldown) * 1000))
return reply(record, granted)
"""
)

# KEYS: circuits' hashes. Returns the server's TIME, each record (a flat list, empty when
# absent or unreadable) and the keys whose records are of another type.
_READ_CIRCUITS_SCRIPT = (
    _KIND
    + """
local clock = redis.call('TIME')
local records, bad = {}, {}
for index, key in ipairs(KEYS) do
  local found = kind(key)
  if found == 'hash' then
    records[index] = redis.call('HGETALL', key)
  else
    records[index] = {}
    if found ~= 'none' then bad[#bad + 1] = key end
  end
end
return {clock[1], clock[2], records, bad}
"""
)

# A counter: its number, and whether it held something else (then it counts as 0 and is rewritten).
_COUNTER = (
    _KIND
    + """
local function counter(key)
  local found = kind(key)
  if found == 'none' then return 0, false end
  if found ~= 'string' then
    redis.call('DEL', key)
    return 0, true
  end
  local value = tonumber(redis.call('GET', key))
  if value == nil then return 0, true end
  return value, false
end
"""
)

# KEYS[1], KEYS[2]: the window's request and token counters; KEYS[3], KEYS[4]: the replicas seen
# in this window and the last. ARGV: rpm, tpm (0: none), known requests, known tokens, owed
# requests, owed tokens, reserve (1 or 0), ttl ms, this process's id. Returns whether a request
# was reserved, the counts after, the replicas seen, and the keys that held something else.
_BUDGET_SCRIPT = (
    _COUNTER
    + """
local rpm, tpm = tonumber(ARGV[1]), tonumber(ARGV[2])
local bad = {}
local stored_requests, bad_requests = counter(KEYS[1])
local stored_tokens, bad_tokens = counter(KEYS[2])
if bad_requests then bad[#bad + 1] = KEYS[1] end
if bad_tokens then bad[#bad + 1] = KEYS[2] end
local requests = math.max(stored_requests, tonumber(ARGV[3])) + tonumber(ARGV[5])
local tokens = math.max(stored_tokens, tonumber(ARGV[4])) + tonumber(ARGV[6])
local reserved = 0
if ARGV[7] == '1' and (rpm == 0 or requests < rpm) and (tpm == 0 or tokens < tpm) then
  requests, reserved = requests + 1, 1
end
if requests ~= stored_requests or bad_requests then
  redis.call('SET', KEYS[1], requests, 'PX', ARGV[8])
end
if tokens ~= stored_tokens or bad_tokens then
  redis.call('SET', KEYS[2], tokens, 'PX', ARGV[8])
end
local replicas = 1
if kind(KEYS[3]) == 'set' or kind(KEYS[3]) == 'none' then
  redis.call('SADD', KEYS[3], ARGV[9])
  redis.call('PEXPIRE', KEYS[3], ARGV[8])
  replicas = redis.call('SCARD', KEYS[3])
end
if kind(KEYS[4]) == 'set' then replicas = math.max(replicas, redis.call('SCARD', KEYS[4])) end
return {reserved, requests, tokens, replicas, bad}
"""
)

# KEYS: the request counters, then the token counters, then the replicas seen in this window and
# the last. Returns the counts (0 for a counter that holds something else), the replicas seen and
# the keys that held something else.
_READ_BUDGETS_SCRIPT = (
    _KIND
    + """
local half = (#KEYS - 2) / 2
local counts, bad = {}, {}
for index = 1, 2 * half do
  local key = KEYS[index]
  local found, value = kind(key), 0
  if found == 'string' then
    value = tonumber(redis.call('GET', key))
    if value == nil then
      value = 0
      bad[#bad + 1] = key
    end
  elseif found ~= 'none' then
    bad[#bad + 1] = key
  end
  counts[index] = value
end
local replicas = 0
for index = #KEYS - 1, #KEYS do
  if kind(KEYS[index]) == 'set' then replicas = math.max(replicas, redis.call('SCARD', KEYS[index])) end
end
return {counts, replicas, bad}
"""
)


# KEYS: the latency lists to add to, then those to read. ARGV: the window, the ttl in ms, the number
# of lists to add to, then for each of them its number of samples and the samples. A list of another
# type is replaced when added to and read as empty. Returns the lists read and the keys that held
# something else.
_SAMPLES_SCRIPT = (
    _KIND
    + """
local window, ttl, added = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local bad, lists, at = {}, {}, 4
for index = 1, added do
  local key, count = KEYS[index], tonumber(ARGV[at])
  local found = kind(key)
  if found ~= 'list' and found ~= 'none' then
    redis.call('DEL', key)
    bad[#bad + 1] = key
  end
  for first = at + 1, at + count, 1000 do  -- In slices: unpack is bounded by Lua's stack.
    redis.call('RPUSH', key, unpack(ARGV, first, math.min(first + 999, at + count)))
  end
  redis.call('LTRIM', key, -window, -1)
  redis.call('PEXPIRE', key, ttl)
  at = at + count + 1
end
for index = added + 1, #KEYS do
  local key = KEYS[index]
  local found = kind(key)
  if found == 'list' then
    lists[#lists + 1] = redis.call('LRANGE', key, -window, -1)
  else
    lists[#lists + 1] = {}
    if found ~= 'none' then bad[#bad + 1] = key end
  end
end
return {lists, bad}
"""
)


class RedisStore:
    """Circuits and rate budgets shared through Redis (redis-py's ``redis.asyncio``).

    Records live under ``routed_llm:{<namespace>}:``: a hash per key whose
    circuit is not closed and clean, two counters per limited key and
    minute, and the set of replicas that reserved in each minute. Only model
    keys, counts, circuit states, times and random process ids are stored;
    nothing from a request. The namespace sits in a Redis Cluster hash tag,
    so one namespace's records share a slot, and every trip is one Lua
    script on that slot: a ``redis.asyncio.cluster.RedisCluster`` works as
    well as a ``redis.asyncio.Redis``. Times are the Redis server's own
    (``TIME``), so replicas' clocks need not agree.

    A record of another type in the namespace (written by something else)
    affects only its own key: it reads as absent, is warned about once, and
    the next write replaces it.

    When Redis is unreachable or slower than ``timeout``, reads and changes
    give up, calls go on with each process's own tracking, and a warning is
    logged once per outage. The client reconnects by itself; until it does,
    the store tries Redis at most once every ``retry_interval`` seconds.

    Args:
        client: A ``redis.asyncio.Redis`` or ``redis.asyncio.cluster.RedisCluster``
            client. Each process (each event loop) needs its own.
        namespace: Shared by every replica of one deployment, e.g.
            ``"support-bot"``: 1-64 letters, digits, ``_``, ``.`` or ``-``.
        timeout: Seconds to wait for Redis on each trip, including the wait
            for a free connection.
        retry_interval: Seconds between attempts to reach Redis during an
            outage (0: try on every call).

    Raises:
        TypeError: If ``client`` is not an async redis-py client, or a number
            is not a number.
        ValueError: If ``namespace`` is not valid, or a number is not finite
            and positive (``retry_interval`` may be 0).
    """

    def __init__(
        self, client: Any, *, namespace: str, timeout: float = 1.0, retry_interval: float = 1.0
    ) -> None:
        import redis.asyncio  # The 'redis' extra; imported here so the core never needs it.
        import redis.asyncio.cluster

        if isinstance(client, redis.Redis) or not isinstance(
            client, redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster
        ):
            raise TypeError(
                "RedisStore(client) takes an async redis-py client, redis.asyncio.Redis or "
                "redis.asyncio.cluster.RedisCluster (e.g. redis.asyncio.Redis.from_url(url)); got "
                f"{type(client).__module__}.{type(client).__name__}."
            )
        self._namespace = check_namespace(namespace)
        self._timeout = _seconds("timeout", timeout, allow_zero=False)
        self._retry_interval = _seconds("retry_interval", retry_interval, allow_zero=True)
        self._client = client
        self._prefix = f"routed_llm:{{{namespace}}}:"
        self._circuit_script = client.register_script(_CIRCUIT_SCRIPT)
        self._read_circuits_script = client.register_script(_READ_CIRCUITS_SCRIPT)
        self._budget_script = client.register_script(_BUDGET_SCRIPT)
        self._read_budgets_script = client.register_script(_READ_BUDGETS_SCRIPT)
        self._samples_script = client.register_script(_SAMPLES_SCRIPT)
        self._replica = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self._down = False
        self._retry_at = 0.0
        self._background: set[asyncio.Task[None]] = set()
        self._warned: set[str] = set()

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

    async def read_circuits(self, keys: Sequence[str]) -> Mapping[str, CircuitReading] | None:
        """Reads the circuits of ``keys`` in one script; None if Redis did not answer."""

        async def trip() -> Mapping[str, CircuitReading]:
            seconds, micros, records, bad = await self._read_circuits_script(
                keys=[self._circuit_key(key) for key in keys]
            )
            self._warn(bad)
            now = _clock(seconds, micros)
            return {
                key: CircuitReading(_fields(record), now)
                for key, record in zip(keys, records, strict=True)
                if record
            }

        return await self._guard(trip)

    async def change_circuit(self, key: str, change: CircuitChange) -> tuple[CircuitReading, bool] | None:
        """Runs the circuit script on ``key``'s record; None if Redis did not answer."""

        async def trip() -> tuple[CircuitReading, bool]:
            record, granted, seconds, micros, bad = await self._circuit_script(
                keys=[self._circuit_key(key)],
                args=[
                    change.op,
                    change.failure_threshold,
                    repr(change.cooldown),
                    repr(change.max_cooldown),
                    repr(change.trial_timeout),
                    change.permit,
                    change.error_class,
                    repr(change.wait),
                    repr(change.age),
                ],
            )
            if bad:
                self._warn([self._circuit_key(key)])
            return CircuitReading(_fields(record), _clock(seconds, micros)), bool(granted)

        return await self._guard(trip)

    async def read_budgets(self, keys: Sequence[str], window: int) -> Mapping[str, BudgetReading] | None:
        """Reads the counts of ``keys`` in ``window`` in one script; None if Redis did not answer."""

        async def trip() -> Mapping[str, BudgetReading]:
            counts, replicas, bad = await self._read_budgets_script(
                keys=[self._requests_key(key, window) for key in keys]
                + [self._tokens_key(key, window) for key in keys]
                + [self._replicas_key(window), self._replicas_key(window - 1)]
            )
            self._warn(bad)
            return {
                key: BudgetReading(int(counts[index]), int(counts[len(keys) + index]), int(replicas))
                for index, key in enumerate(keys)
            }

        return await self._guard(trip)

    async def change_budget(self, key: str, change: BudgetChange) -> BudgetReading | None:
        """Runs the budget script on the window's counters; None if Redis did not answer."""
        window = change.window

        async def trip() -> BudgetReading:
            reserved, requests, tokens, replicas, bad = await self._budget_script(
                keys=[
                    self._requests_key(key, window),
                    self._tokens_key(key, window),
                    self._replicas_key(window),
                    self._replicas_key(window - 1),
                ],
                args=[
                    change.rpm or 0,
                    change.tpm or 0,
                    change.requests,
                    change.tokens,
                    change.owed_requests,
                    change.owed_tokens,
                    1 if change.reserve else 0,
                    BUDGET_TTL_MS,
                    self._replica,
                ],
            )
            self._warn(bad)
            return BudgetReading(int(requests), int(tokens), int(replicas), bool(reserved))

        return await self._guard(trip)

    async def share_samples(
        self, new: Mapping[str, Sequence[float]], keys: Sequence[str], window: int
    ) -> Mapping[str, Sequence[float]] | None:
        """Appends ``new`` to capped lists, reads ``keys``' lists, in one script; None if no answer."""
        added = {key: samples for key, samples in new.items() if samples}

        async def trip() -> Mapping[str, Sequence[float]]:
            args: list[str | int] = [window, SAMPLES_TTL_MS, len(added)]
            for samples in added.values():
                args += [len(samples), *(repr(float(sample)) for sample in samples)]
            lists, bad = await self._samples_script(
                keys=[self._samples_key(key) for key in (*added, *keys)], args=args
            )
            self._warn(bad)
            return {key: self._samples(key, reply) for key, reply in zip(keys, lists, strict=True)}

        return await self._guard(trip)

    def background(self, work: Coroutine[Any, Any, object]) -> None:
        """Runs ``work`` as a task the store keeps until it ends (see :meth:`drain`)."""

        async def run() -> None:
            await work

        task = asyncio.get_running_loop().create_task(run())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def drain(self) -> None:
        """Waits for the background writes started so far (for tests, benchmarks and shutdown)."""
        while self._background:
            await asyncio.gather(*self._background)

    def _samples(self, key: str, reply: Sequence[object]) -> tuple[float, ...]:
        """The numbers in ``key``'s latency list; an entry that is not one is skipped and warned about."""
        samples = []
        for item in reply:
            try:
                sample = float(_text(item))
            except ValueError:
                sample = math.nan
            if math.isfinite(sample) and sample >= 0:
                samples.append(sample)
            else:
                self._warn([self._samples_key(key)])
        return tuple(samples)

    def _warn(self, keys: Sequence[object]) -> None:
        """Warns once per key about a record this store cannot read (written by something else)."""
        for key in map(_text, keys):
            if key not in self._warned:
                self._warned.add(key)
                logger.warning(
                    "Redis key %r holds a record routed_llm cannot read (another type, or not a number); "
                    "it is ignored, and the next write replaces it. Keep other data out of the "
                    "namespace %r.",
                    key,
                    self._namespace,
                )

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

    def _replicas_key(self, window: int) -> str:
        return f"{self._prefix}replicas:{window}"

    def _samples_key(self, key: str) -> str:
        return f"{self._prefix}latency:{key}"


def _clock(seconds: object, micros: object) -> float:
    return int(_text(seconds)) + int(_text(micros)) / 1_000_000


def _fields(record: Sequence[object]) -> dict[str, str]:
    flat = [_text(item) for item in record]
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _seconds(name: str, value: object, *, allow_zero: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"RedisStore({name}=...) is a number of seconds; got {type(value).__name__}.")
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = "0 or more" if allow_zero else "above 0"
        raise ValueError(f"RedisStore({name}={value!r}) must be a finite number of seconds, {bound}.")
    return float(value)
