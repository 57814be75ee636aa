"""is_transient: which failures may fall back, for each recognised error shape."""

from __future__ import annotations

import aiohttp
import httpx
import pytest
from google.genai import errors

from routed_llm import (
    PermanentModelError,
    TransientModelError,
    classify_error,
    fall_back_across_providers,
    is_transient,
)


def genai_error(code: int, status: str, message: str = "scripted", reason: str = "") -> errors.APIError:
    body: dict = {"error": {"code": code, "message": message, "status": status}}
    if reason:
        body["error"]["details"] = [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": reason,
                "domain": "googleapis.com",
            }
        ]
    return errors.ServerError(code, body) if code >= 500 else errors.ClientError(code, body)


def httpx_status_error(code: int) -> httpx.HTTPStatusError:
    request = httpx.Request("POST", "http://127.0.0.1/v1")
    return httpx.HTTPStatusError("scripted", request=request, response=httpx.Response(code, request=request))


def aiohttp_status_error(code: int) -> aiohttp.ClientResponseError:
    return aiohttp.ClientResponseError(request_info=None, history=(), status=code)  # type: ignore[arg-type]


class StatusCodeError(Exception):
    """The shape of LiteLLM, OpenAI and Anthropic errors: an int ``status_code``."""

    def __init__(self, status_code: int) -> None:
        super().__init__(f"status {status_code}")
        self.status_code = status_code


def chained(outer: Exception, cause: BaseException) -> Exception:
    outer.__cause__ = cause
    return outer


TRANSIENT = {
    "genai 429 RESOURCE_EXHAUSTED": genai_error(429, "RESOURCE_EXHAUSTED"),
    "genai 500 INTERNAL": genai_error(500, "INTERNAL"),
    "genai 502": genai_error(502, ""),
    "genai 503 UNAVAILABLE": genai_error(503, "UNAVAILABLE"),
    "genai 504 DEADLINE_EXCEEDED": genai_error(504, "DEADLINE_EXCEEDED"),
    "httpx connect error": httpx.ConnectError("connection refused"),
    "httpx read timeout": httpx.ReadTimeout("timed out"),
    "httpx remote protocol error": httpx.RemoteProtocolError("peer closed connection"),
    "httpx status 503": httpx_status_error(503),
    "aiohttp status 502": aiohttp_status_error(502),
    "aiohttp server disconnected": aiohttp.ServerDisconnectedError(),
    "aiohttp connection error": aiohttp.ClientConnectionError("refused"),
    "aiohttp payload cut mid-body": aiohttp.ClientPayloadError("Response payload is not completed"),
    "genai 503 with an HTML body": errors.ServerError(503, {"message": "<html>503</html>"}),
    "status_code 429": StatusCodeError(429),
    "status_code 408 timeout": StatusCodeError(408),
    "status_code 500": StatusCodeError(500),
    "TimeoutError": TimeoutError(),
    "ConnectionRefusedError": ConnectionRefusedError(),
    "MemoryError (on-device OOM)": MemoryError(),
    "on-device runtime RuntimeError": RuntimeError("llama_decode returned -1"),
    "ValueError (no API key)": ValueError("No API key was provided."),
    "TransientModelError": TransientModelError("explicitly transient"),
    "TransientModelError over a permanent cause": chained(TransientModelError("retry"), genai_error(400, "")),
    "wrapper over a 503": chained(RuntimeError("wrapped"), genai_error(503, "UNAVAILABLE")),
}

PERMANENT = {
    "genai 400 INVALID_ARGUMENT": genai_error(400, "INVALID_ARGUMENT"),
    "genai 400 FAILED_PRECONDITION": genai_error(400, "FAILED_PRECONDITION"),
    "genai 401 UNAUTHENTICATED": genai_error(401, "UNAUTHENTICATED"),
    "genai 403 PERMISSION_DENIED": genai_error(403, "PERMISSION_DENIED"),
    "genai 404 NOT_FOUND": genai_error(404, "NOT_FOUND"),
    "genai 412": genai_error(412, ""),
    "httpx status 401": httpx_status_error(401),
    "aiohttp status 403": aiohttp_status_error(403),
    "status_code 400": StatusCodeError(400),
    "status_code 404": StatusCodeError(404),
    "PermanentModelError": PermanentModelError("explicitly permanent"),
    "wrapper over a 401": chained(RuntimeError("wrapped"), genai_error(401, "UNAUTHENTICATED")),
}


@pytest.mark.parametrize("error", TRANSIENT.values(), ids=TRANSIENT.keys())
def test_transient_failures_may_fall_back(error):
    assert is_transient(error) is True


@pytest.mark.parametrize("error", PERMANENT.values(), ids=PERMANENT.keys())
def test_permanent_failures_propagate_at_once(error):
    assert is_transient(error) is False


def test_status_name_outranks_the_http_code():
    error = genai_error(400, "UNAVAILABLE")

    assert is_transient(error) is True


def test_a_cycle_of_causes_ends():
    first, second = RuntimeError("a"), RuntimeError("b")
    first.__cause__, second.__cause__ = second, first

    assert is_transient(first) is True


GEMINI_OVERFLOW = genai_error(
    400,
    "INVALID_ARGUMENT",
    "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).",
)


def test_gemini_context_window_overflow_is_transient():
    assert is_transient(GEMINI_OVERFLOW) is True


def test_other_invalid_arguments_stay_permanent():
    assert is_transient(genai_error(400, "INVALID_ARGUMENT", "Invalid JSON payload received.")) is False


PROVIDER = {
    "genai 400 API_KEY_INVALID": genai_error(
        400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.", reason="API_KEY_INVALID"
    ),
    "genai 400 expired key, by reason only": genai_error(
        400, "INVALID_ARGUMENT", "API key expired. Please renew the API key.", reason="API_KEY_INVALID"
    ),
    "genai 401 UNAUTHENTICATED": genai_error(401, "UNAUTHENTICATED"),
    "genai 403 disabled API": genai_error(
        403,
        "PERMISSION_DENIED",
        "Generative Language API has not been used in project 1 before or it is disabled.",
        reason="SERVICE_DISABLED",
    ),
    "genai 400 unsupported user location": genai_error(
        400, "FAILED_PRECONDITION", "User location is not supported for the API use."
    ),
    "genai 404 retired model": genai_error(404, "NOT_FOUND", "models/gemini-1.0-pro is not found."),
    "httpx status 401": httpx_status_error(401),
    "httpx status 403": httpx_status_error(403),
    "aiohttp status 401": aiohttp_status_error(401),
    "aiohttp status 404": aiohttp_status_error(404),
    "status_code 401": StatusCodeError(401),
    "status_code 403": StatusCodeError(403),
    "wrapper over a stale key": chained(RuntimeError("wrapped"), genai_error(401, "UNAUTHENTICATED")),
}
REQUEST = {
    "genai 400 INVALID_ARGUMENT": genai_error(400, "INVALID_ARGUMENT", "Invalid value at 'contents'."),
    "httpx status 400": httpx_status_error(400),
    "aiohttp status 400": aiohttp_status_error(400),
    "status_code 400": StatusCodeError(400),
    "PermanentModelError": PermanentModelError("explicitly permanent"),
}


@pytest.mark.parametrize("error", PROVIDER.values(), ids=PROVIDER.keys())
def test_provider_scoped_failures_are_classed_provider(error):
    assert classify_error(error) == "provider"


@pytest.mark.parametrize("error", REQUEST.values(), ids=REQUEST.keys())
def test_failures_of_the_request_itself_are_classed_request(error):
    assert classify_error(error) == "request"


@pytest.mark.parametrize("error", TRANSIENT.values(), ids=TRANSIENT.keys())
def test_transient_failures_are_classed_transient(error):
    assert classify_error(error) == "transient"


@pytest.mark.parametrize("error", PROVIDER.values(), ids=PROVIDER.keys())
def test_default_policy_keeps_provider_failures_permanent(error):
    assert is_transient(error) is False


@pytest.mark.parametrize("error", PROVIDER.values(), ids=PROVIDER.keys())
def test_fall_back_across_providers_falls_back_on_provider_failures(error):
    assert fall_back_across_providers(error) is True


@pytest.mark.parametrize("error", REQUEST.values(), ids=REQUEST.keys())
def test_fall_back_across_providers_propagates_failures_of_the_request(error):
    assert fall_back_across_providers(error) is False


def test_group_of_permanent_leaves_is_permanent():
    group = ExceptionGroup("task group", [genai_error(401, "UNAUTHENTICATED")])

    assert is_transient(group) is False


def test_group_holding_one_permanent_leaf_among_transient_ones_is_permanent():
    group = ExceptionGroup("task group", [ConnectionError("down"), PermanentModelError("bad request")])

    assert is_transient(group) is False


def test_group_of_transient_leaves_is_transient():
    group = ExceptionGroup("task group", [ConnectionError("down"), genai_error(503, "UNAVAILABLE")])

    assert is_transient(group) is True


def test_nested_group_takes_the_worst_class_of_its_leaves():
    inner = ExceptionGroup("inner", [genai_error(403, "PERMISSION_DENIED"), TimeoutError()])
    group = ExceptionGroup("outer", [ConnectionError("down"), inner])

    assert classify_error(group) == "provider"


def test_group_behind_a_wrapper_is_read_through_the_cause_chain():
    wrapper = chained(RuntimeError("wrapped"), ExceptionGroup("task group", [PermanentModelError("bad")]))

    assert is_transient(wrapper) is False


def test_vertex_context_window_overflow_is_transient():
    error = genai_error(
        400,
        "INVALID_ARGUMENT",
        "Unable to submit request because the input token count is 1200000 "
        "but model only supports up to 1048576.",
    )

    assert is_transient(error) is True


def test_a_cycle_through_an_exception_group_ends():
    leaf = ConnectionError("down")
    group = ExceptionGroup("task group", [leaf])
    leaf.__cause__ = group

    assert classify_error(group) == "transient"


def test_absurdly_nested_groups_never_make_the_policy_raise():
    error: BaseException = ConnectionError("down")
    for _ in range(5000):
        error = ExceptionGroup("nested", [error])

    assert classify_error(error) == "transient"
