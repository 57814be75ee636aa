"""An ADK agent whose model fails over from Gemini to a local model.

``adk run examples/failover`` and ``adk web examples`` pick up ``root_agent``.
Without ``GOOGLE_API_KEY`` (or without a network) the Gemini call fails and
the router sends the turn to the local model; with both, Gemini answers.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

from google.adk.agents import LlmAgent
from google.adk.models import Gemini
from google.adk.models.base_llm import BaseLlm
from google.adk.models.llm_request import LlmRequest
from google.adk.models.llm_response import LlmResponse
from google.genai import types

from routed_llm import ErrorContext, RoutedLlm


class LocalRulesLlm(BaseLlm):
    """A stand-in local model: answers from a few canned rules, offline."""

    async def generate_content_async(
        self, llm_request: LlmRequest, stream: bool = False
    ) -> AsyncGenerator[LlmResponse, None]:
        question = (llm_request.contents[-1].parts or [types.Part(text="")])[0].text or ""
        answer = f"(local model) I can't reach the cloud, but I heard you ask: {question!r}"
        yield LlmResponse(
            content=types.Content(role="model", parts=[types.Part(text=answer)]),
            usage_metadata=types.GenerateContentResponseUsageMetadata(
                prompt_token_count=len(question.split()), candidates_token_count=len(answer.split())
            ),
        )


def primary_then_local(
    models: object, llm_request: LlmRequest, error_context: ErrorContext | None
) -> str | None:
    """The seed's router: primary first, the fallback once, then give up."""
    if error_context is None:
        return "cloud"
    if "local" not in error_context.failed_keys:
        return "local"
    return None


model = RoutedLlm(
    models={
        "cloud": Gemini(model="gemini-2.5-flash", retry_options=types.HttpRetryOptions(attempts=1)),
        "local": LocalRulesLlm(model="local-rules"),
    },
    router=primary_then_local,
)

root_agent = LlmAgent(
    name="assistant",
    model=model,
    instruction="You are a helpful assistant. Answer in one sentence.",
)
