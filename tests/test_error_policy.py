"""is_transient: which failures may fall back, for each recognised error shape."""

from __future__ import annotations

import aiohttp
import httpx
import pytest
from google.genai import errors

from routed_llm import PermanentModelError, TransientModelError, is_transient


def genai_error(code: int, status: str) -> errors.APIError:
    body = {"error": {"code": code, "message": "scripted", "status": status}}
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
