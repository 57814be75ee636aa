"""HealthTracker: the per-key circuit breaker, and retry_after."""

from __future__ import annotations

import logging
import os
import sys
import threading

import aiohttp
import httpx
import pytest
from google.genai import errors
from multidict import CIMultiDict
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from routed_llm.health import HealthChangeEvent, HealthTracker, retry_after

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # Never fetch the cost map.


class FakeClock:
    """A clock that moves only when the test moves it."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def events() -> list[HealthChangeEvent]:
    return []


@pytest.fixture
def health(clock, events) -> HealthTracker:
    return HealthTracker(
        failure_threshold=3, cooldown=30.0, max_cooldown=600.0, clock=clock, on_health_change=events.append
    )


def outage() -> errors.ServerError:
    return errors.ServerError(503, {"error": {"code": 503, "message": "down", "status": "UNAVAILABLE"}})


def stale_key() -> errors.ClientError:
    return errors.ClientError(
        401, {"error": {"code": 401, "message": "bad key", "status": "UNAUTHENTICATED"}}
    )


def open_circuit(health: HealthTracker, key: str = "primary") -> None:
    for _ in range(3):
        health.record_failure(key, outage(), "transient")


def half_open_circuit(health: HealthTracker, clock: FakeClock, key: str = "primary") -> None:
    open_circuit(health, key)
    clock.advance(30.0)


# Real errors from each SDK that ask to wait 12 seconds.


def httpx_429(headers: dict[str, str]) -> httpx.HTTPStatusError:
    request = httpx.Request("POST", "http://127.0.0.1/v1")
    response = httpx.Response(429, headers=headers, request=request)
    return httpx.HTTPStatusError("429 Too Many Requests", request=request, response=response)


def aiohttp_429(headers: dict[str, str]) -> aiohttp.ClientResponseError:
    return aiohttp.ClientResponseError(
        request_info=None,  # type: ignore[arg-type]
        history=(),
        status=429,
        headers=CIMultiDict(headers),
    )


def genai_429(retry_delay: str) -> errors.ClientError:
    return errors.ClientError(
        429,
        {
            "error": {
                "code": 429,
                "message": "Resource has been exhausted (e.g. check quota).",
                "status": "RESOURCE_EXHAUSTED",
                "details": [
                    {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": []},
                    {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": retry_delay},
                ],
            }
        },
    )


def litellm_rate_limit(headers: dict[str, str]) -> Exception:
    litellm = pytest.importorskip("litellm", reason="install the 'litellm' extra (nox does)")
    response = httpx.Response(429, headers=headers, request=httpx.Request("POST", "http://127.0.0.1/v1"))
    return litellm.RateLimitError(
        message="slow down", llm_provider="openai", model="gpt-x", response=response
    )


def litellm_mapped_503(headers: dict[str, str]) -> Exception:
    """As LiteLLM's exception mapping leaves it: the provider's headers on ``litellm_response_headers``."""
    litellm = pytest.importorskip("litellm", reason="install the 'litellm' extra (nox does)")
    error = litellm.ServiceUnavailableError(message="overloaded", llm_provider="openai", model="gpt-x")
    error.litellm_response_headers = httpx.Headers(headers)
    return error


TWELVE_SECONDS = {
    "httpx HTTPStatusError": lambda: httpx_429({"Retry-After": "12"}),
    "aiohttp ClientResponseError": lambda: aiohttp_429({"Retry-After": "12"}),
    "google-genai RetryInfo": lambda: genai_429("12s"),
    "litellm RateLimitError": lambda: litellm_rate_limit({"retry-after": "12"}),
    "litellm mapped error": lambda: litellm_mapped_503({"Retry-After": "12"}),
    "retry-after-ms header": lambda: httpx_429({"retry-after-ms": "12000"}),
}


# Closed: counting transient failures.


def test_a_key_never_reported_is_closed_and_available(health):
    assert health.state("primary") == "closed"
    assert health.is_available("primary") is True


def test_key_stays_closed_below_the_threshold(health):
    health.record_failure("primary", outage(), "transient")
    health.record_failure("primary", outage(), "transient")

    assert health.state("primary") == "closed"
    assert health.is_available("primary") is True


def test_key_opens_after_threshold_consecutive_transient_failures(health):
    open_circuit(health)

    assert health.state("primary") == "open"
    assert health.is_available("primary") is False


def test_success_resets_the_count_of_consecutive_failures(health):
    health.record_failure("primary", outage(), "transient")
    health.record_failure("primary", outage(), "transient")
    health.record_success("primary")

    health.record_failure("primary", outage(), "transient")
    health.record_failure("primary", outage(), "transient")

    assert health.state("primary") == "closed"


def test_request_errors_do_not_count_against_the_key(health):
    bad_request = errors.ClientError(400, {"error": {"code": 400, "status": "INVALID_ARGUMENT"}})
    for _ in range(5):
        health.record_failure("primary", bad_request, "request")

    assert health.state("primary") == "closed"


def test_request_errors_do_not_reset_the_count_either(health):
    health.record_failure("primary", outage(), "transient")
    health.record_failure("primary", outage(), "transient")
    health.record_failure("primary", ValueError("bad request"), "request")
    health.record_failure("primary", outage(), "transient")

    assert health.state("primary") == "open"


def test_provider_error_opens_the_key_at_once_for_max_cooldown(health, clock):
    health.record_failure("primary", stale_key(), "provider")

    assert health.state("primary") == "open"
    assert health.available_at("primary") == clock.now + 600.0


def test_an_unknown_error_class_is_rejected(health):
    with pytest.raises(ValueError, match="error_class must be 'transient', 'provider' or 'request'"):
        health.record_failure("primary", outage(), "permanent")  # type: ignore[arg-type]


# Open: cooldowns, and failures that say how long to wait.


def test_open_key_becomes_half_open_when_its_cooldown_ends(health, clock):
    open_circuit(health)

    clock.advance(29.9)
    assert health.state("primary") == "open"
    clock.advance(0.1)
    assert health.state("primary") == "half_open"
    assert health.is_available("primary") is True


@pytest.mark.parametrize("make_error", TWELVE_SECONDS.values(), ids=TWELVE_SECONDS.keys())
def test_retry_after_reads_each_sdks_shape(make_error):
    assert retry_after(make_error()) == 12.0


def test_retry_after_reads_fractional_seconds():
    assert retry_after(genai_429("1.5s")) == 1.5
    assert retry_after(httpx_429({"Retry-After": "1.5"})) == 1.5


def test_retry_after_reads_a_duplicated_header_as_one_value():
    request = httpx.Request("POST", "http://127.0.0.1/v1")
    response = httpx.Response(429, headers=[("Retry-After", "5"), ("Retry-After", "5")], request=request)

    assert retry_after(httpx.HTTPStatusError("429", request=request, response=response)) == 5.0


def test_retry_after_measures_an_http_date_against_the_wall_clock():
    error = httpx_429({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})
    wall_clock = FakeClock(now=1445412480.0 - 45.0)  # 45 s before that date.

    assert retry_after(error, wall_clock=wall_clock) == 45.0


def test_retry_after_of_a_date_already_past_is_zero():
    error = httpx_429({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})

    assert retry_after(error, wall_clock=FakeClock(now=1445412480.0 + 5.0)) == 0.0


def test_retry_after_is_read_through_the_cause_chain():
    wrapper = RuntimeError("model call failed")
    wrapper.__cause__ = httpx_429({"Retry-After": "12"})

    assert retry_after(wrapper) == 12.0


@pytest.mark.parametrize(
    "error",
    [
        outage(),
        ConnectionError("refused"),
        httpx_429({}),
        httpx_429({"Retry-After": "soon"}),
        httpx_429({"Retry-After": "-3"}),
        genai_429("a while"),
    ],
    ids=["no details", "no response", "no header", "not a number or date", "negative", "bad duration"],
)
def test_retry_after_is_none_when_the_error_does_not_say(error):
    assert retry_after(error) is None


@pytest.mark.parametrize("make_error", TWELVE_SECONDS.values(), ids=TWELVE_SECONDS.keys())
def test_transient_failure_asking_to_wait_opens_the_key_at_once_for_that_long(health, clock, make_error):
    health.record_failure("primary", make_error(), "transient")

    assert health.state("primary") == "open"
    clock.advance(11.9)
    assert health.state("primary") == "open"
    clock.advance(0.1)
    assert health.state("primary") == "half_open"


def test_wait_asked_for_is_capped_at_max_cooldown(health, clock):
    health.record_failure("primary", httpx_429({"Retry-After": "86400"}), "transient")

    assert health.available_at("primary") == clock.now + 600.0


def test_tracker_measures_an_http_date_against_its_wall_clock(clock):
    health = HealthTracker(clock=clock, wall_clock=FakeClock(now=1445412480.0 - 45.0))

    health.record_failure("primary", httpx_429({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}), "transient")

    assert health.available_at("primary") == clock.now + 45.0


def test_retry_after_of_zero_counts_as_an_ordinary_failure(health):
    health.record_failure("primary", httpx_429({"Retry-After": "0"}), "transient")

    assert health.state("primary") == "closed"


def test_failures_reported_while_open_are_ignored(health, clock):
    open_circuit(health)
    clock.advance(10.0)

    health.record_failure("primary", outage(), "transient")
    health.record_failure("primary", stale_key(), "provider")

    assert health.available_at("primary") == clock.now + 20.0


def test_a_success_closes_an_open_circuit(health):
    open_circuit(health)

    health.record_success("primary")

    assert health.state("primary") == "closed"


# Half-open: one trial at a time.


def test_closed_key_allows_any_number_of_attempts(health):
    assert all(health.try_acquire("primary") for _ in range(5))
    assert health.is_available("primary") is True


def test_open_key_still_allows_an_attempt_the_loop_chose_to_make(health):
    open_circuit(health)

    assert health.try_acquire("primary") is True
    assert health.state("primary") == "open"


def test_half_open_key_allows_exactly_one_trial_at_a_time(health, clock):
    half_open_circuit(health, clock)

    assert health.try_acquire("primary") is True
    assert health.is_available("primary") is False
    assert health.try_acquire("primary") is False


def test_trial_success_closes_the_circuit(health, clock):
    half_open_circuit(health, clock)
    health.try_acquire("primary")

    health.record_success("primary")

    assert health.state("primary") == "closed"
    assert health.is_available("primary") is True


def test_trial_failure_reopens_with_the_cooldown_doubled(health, clock):
    half_open_circuit(health, clock)
    health.try_acquire("primary")

    health.record_failure("primary", outage(), "transient")

    assert health.state("primary") == "open"
    assert health.available_at("primary") == clock.now + 60.0


def test_each_consecutive_reopening_doubles_the_cooldown_up_to_max_cooldown(health, clock):
    open_circuit(health)
    cooldowns = []
    for _ in range(6):
        clock.now = health.available_at("primary")
        health.try_acquire("primary")
        health.record_failure("primary", outage(), "transient")
        cooldowns.append(health.available_at("primary") - clock.now)

    assert cooldowns == [60.0, 120.0, 240.0, 480.0, 600.0, 600.0]


def test_closing_resets_the_cooldown(health, clock):
    half_open_circuit(health, clock)
    health.try_acquire("primary")
    health.record_failure("primary", outage(), "transient")  # Open for 60 s.
    clock.advance(60.0)
    health.record_success("primary")

    open_circuit(health)

    assert health.available_at("primary") == clock.now + 30.0


def test_release_gives_the_trial_permit_back_without_changing_the_state(health, clock):
    half_open_circuit(health, clock)
    health.try_acquire("primary")

    health.release("primary")

    assert health.state("primary") == "half_open"
    assert health.is_available("primary") is True
    assert health.try_acquire("primary") is True


def test_request_error_on_a_trial_gives_the_permit_back_without_a_verdict(health, clock):
    half_open_circuit(health, clock)
    health.try_acquire("primary")

    health.record_failure("primary", ValueError("bad request"), "request")

    assert health.state("primary") == "half_open"
    assert health.try_acquire("primary") is True


def test_release_without_a_trial_in_flight_changes_nothing(health):
    health.release("primary")
    health.record_failure("primary", outage(), "transient")
    health.release("primary")

    assert health.state("primary") == "closed"


def test_trial_permit_never_given_back_lapses_after_the_trial_timeout(health, clock):
    half_open_circuit(health, clock)
    health.try_acquire("primary", permit="lost with a crashed call")

    clock.advance(59.0)
    assert health.try_acquire("primary", permit="next") is False
    clock.advance(1.0)
    assert health.try_acquire("primary", permit="next") is True


def test_trial_timeout_sets_when_a_lost_permit_lapses(clock):
    health = HealthTracker(failure_threshold=1, cooldown=30.0, trial_timeout=5.0, clock=clock)
    health.record_failure("primary", outage(), "transient")
    clock.advance(30.0)
    health.try_acquire("primary", permit="lost")

    clock.advance(5.0)

    assert health.try_acquire("primary", permit="next") is True


@pytest.mark.parametrize("trial_timeout", [0, -1.0, float("inf"), float("nan")])
def test_a_trial_timeout_that_is_not_a_positive_number_of_seconds_is_refused(trial_timeout):
    with pytest.raises(ValueError, match="trial_timeout"):
        HealthTracker(trial_timeout=trial_timeout)


def test_only_the_holder_of_the_trial_permit_gives_it_back(health, clock):
    half_open_circuit(health, clock)
    health.try_acquire("primary", permit="holder")

    health.release("primary", permit="another call")
    after_another = health.is_available("primary")
    health.release("primary", permit="holder")

    assert (after_another, health.is_available("primary")) == (False, True)


def test_a_request_error_of_another_call_leaves_the_trial_permit_with_its_holder(health, clock):
    half_open_circuit(health, clock)
    health.try_acquire("primary", permit="holder")

    health.record_failure("primary", PermissionError("refused"), "request", permit="another call")

    assert health.is_available("primary") is False


# Choosing when every key is out.


def test_available_at_is_now_for_an_available_key(health, clock):
    assert health.available_at("primary") == clock.now


def test_available_at_is_when_the_cooldown_ends(health, clock):
    open_circuit(health)
    clock.advance(10.0)

    assert health.available_at("primary") == clock.now + 20.0


def test_soonest_is_the_first_available_key_in_the_given_order(health):
    open_circuit(health, "primary")

    assert health.soonest(["primary", "backup", "spare"]) == "backup"


def test_soonest_is_the_key_whose_cooldown_ends_first_when_none_is_available(health, clock):
    health.record_failure("primary", stale_key(), "provider")  # Out for 600 s.
    open_circuit(health, "backup")  # Out for 30 s.

    assert health.soonest(["primary", "backup"]) == "backup"


def test_soonest_of_no_keys_is_none(health):
    assert health.soonest([]) is None


# Sharing.


def test_keys_are_tracked_independently(health):
    open_circuit(health, "primary")
    health.record_failure("backup", outage(), "transient")

    assert health.state("primary") == "open"
    assert health.state("backup") == "closed"
    assert health.is_available("backup") is True


@pytest.fixture
def eager_thread_switching():
    """Makes threads switch as often as possible, so an unguarded race shows."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(interval)


@pytest.mark.usefixtures("eager_thread_switching")
def test_failures_reported_from_many_threads_all_count(clock, events):
    health = HealthTracker(failure_threshold=400, clock=clock, on_health_change=events.append)
    start = threading.Barrier(4)

    def report() -> None:
        start.wait()
        for _ in range(100):
            health.record_failure("primary", outage(), "transient")

    threads = [threading.Thread(target=report) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert health.state("primary") == "open"
    assert [(e.previous, e.state) for e in events] == [("closed", "open")]


@pytest.mark.usefixtures("eager_thread_switching")
def test_only_one_of_many_threads_gets_the_trial_permit(health, clock):
    half_open_circuit(health, clock)
    start = threading.Barrier(8)
    granted = []

    def attempt() -> None:
        start.wait()
        granted.append(health.try_acquire("primary"))

    threads = [threading.Thread(target=attempt) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(granted) == [False] * 7 + [True]


# Observability.


def test_each_change_reaches_the_hook_once_with_key_reason_and_cooldown(health, clock, events):
    open_circuit(health)  # At 1000.
    clock.advance(30.0)
    health.state("primary")
    health.is_available("primary")
    health.try_acquire("primary")  # At 1030.
    health.record_failure("primary", outage(), "transient")
    clock.advance(60.0)
    health.try_acquire("primary")  # At 1090.
    health.record_success("primary")

    assert events == [
        HealthChangeEvent(
            "primary",
            "closed",
            "open",
            "3 consecutive transient failures, the last ServerError",
            30.0,
            1000.0,
        ),
        HealthChangeEvent("primary", "open", "half_open", "its cooldown of 30 s ended", None, 1030.0),
        HealthChangeEvent(
            "primary", "half_open", "open", "the trial call failed with ServerError", 60.0, 1030.0
        ),
        HealthChangeEvent("primary", "open", "half_open", "its cooldown of 60 s ended", None, 1090.0),
        HealthChangeEvent("primary", "half_open", "closed", "a call succeeded", None, 1090.0),
    ]


def test_the_hook_hears_why_a_provider_error_or_a_wait_opened_the_key(health, events):
    health.record_failure("primary", stale_key(), "provider")
    health.record_failure("backup", httpx_429({"Retry-After": "12"}), "transient")

    assert [(e.key, e.reason, e.cooldown) for e in events] == [
        ("primary", "provider error ClientError: this key cannot serve anyone", 600.0),
        ("backup", "HTTPStatusError asked to wait 12 s", 12.0),
    ]


def test_failures_and_attempts_that_change_no_state_reach_no_hook(health, events):
    health.record_failure("primary", outage(), "transient")
    health.record_success("primary")
    health.try_acquire("primary")
    health.release("primary")

    assert events == []


def test_each_change_is_logged_once_warning_when_opening(health, clock, caplog):
    caplog.set_level(logging.INFO, logger="routed_llm.health")
    open_circuit(health)
    clock.advance(30.0)
    for _ in range(3):
        health.is_available("primary")
    health.record_success("primary")

    records = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "routed_llm.health"]
    assert records == [
        (
            logging.WARNING,
            "Model key 'primary' is out for 30 s (circuit closed -> open): "
            "3 consecutive transient failures, the last ServerError.",
        ),
        (logging.INFO, "Model key 'primary' circuit open -> half_open: its cooldown of 30 s ended."),
        (logging.INFO, "Model key 'primary' circuit half_open -> closed: a call succeeded."),
    ]


def test_a_hook_that_raises_is_logged_and_ignored(clock, caplog):
    def broken_hook(event: HealthChangeEvent) -> None:
        raise RuntimeError("dashboard down")

    health = HealthTracker(clock=clock, on_health_change=broken_hook)

    open_circuit(health)

    assert health.state("primary") == "open"
    [record] = [r for r in caplog.records if r.name == "routed_llm.health" and r.levelno == logging.ERROR]
    assert "raised; ignored" in record.getMessage()
    assert record.exc_info is not None


def test_a_hook_may_ask_the_tracker_about_the_key(clock):
    seen = []
    health = HealthTracker(clock=clock, on_health_change=lambda event: seen.append(health.state(event.key)))

    open_circuit(health)

    assert seen == ["open"]


def test_each_change_is_counted_on_the_circuit_changes_metric(clock):
    reader = InMemoryMetricReader()
    health = HealthTracker(clock=clock, meter_provider=MeterProvider(metric_readers=[reader]))

    open_circuit(health)
    clock.advance(30.0)
    health.try_acquire("primary")
    health.record_success("primary")

    [metric] = [
        metric
        for resource in reader.get_metrics_data().resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == "routed_llm.circuit_changes"
    ]
    counts = {
        (point.attributes["routed_llm.key"], point.attributes["routed_llm.state"]): point.value
        for point in metric.data.data_points
    }
    assert counts == {("primary", "open"): 1, ("primary", "half_open"): 1, ("primary", "closed"): 1}


# Construction.


INVALID_SETTINGS = {
    "threshold of 0": ({"failure_threshold": 0}, ValueError, r"failure_threshold=0\) must be at least 1"),
    "fractional threshold": ({"failure_threshold": 2.5}, TypeError, r"failure_threshold=...\) is a whole"),
    "bool threshold": ({"failure_threshold": True}, TypeError, r"failure_threshold=...\) is a whole"),
    "zero cooldown": (
        {"cooldown": 0},
        ValueError,
        r"cooldown=0\) must be a finite number of seconds above 0",
    ),
    "negative cooldown": ({"cooldown": -1.0}, ValueError, r"cooldown=-1.0\) must be a finite number"),
    "nan cooldown": ({"cooldown": float("nan")}, ValueError, r"cooldown=nan\) must be a finite number"),
    "string cooldown": ({"cooldown": "30"}, TypeError, r"cooldown=...\) is a number of seconds"),
    "endless max_cooldown": ({"max_cooldown": float("inf")}, ValueError, r"max_cooldown=inf\) must be"),
    "cap below cooldown": (
        {"cooldown": 60.0, "max_cooldown": 10.0},
        ValueError,
        r"max_cooldown=10.0\) is shorter than cooldown=60.0; .* raise it",
    ),
    "clock not callable": ({"clock": 0.0}, TypeError, r"clock=...\) must be a function returning seconds"),
    "wall_clock not callable": ({"wall_clock": None}, TypeError, r"wall_clock=...\) must be a function"),
    "hook not callable": (
        {"on_health_change": "log"},
        TypeError,
        r"on_health_change=...\) must be a function",
    ),
}


@pytest.mark.parametrize(
    ("options", "error", "message"), INVALID_SETTINGS.values(), ids=INVALID_SETTINGS.keys()
)
def test_invalid_settings_are_rejected_with_a_message_saying_how_to_fix_them(options, error, message):
    with pytest.raises(error, match=message):
        HealthTracker(**options)


def test_an_async_hook_is_rejected_at_construction():
    async def hook(event: HealthChangeEvent) -> None:
        pass

    with pytest.raises(TypeError, match="must be a plain function, not async"):
        HealthTracker(on_health_change=hook)


def test_settings_are_keyword_only():
    with pytest.raises(TypeError):
        HealthTracker(3)  # type: ignore[misc]
