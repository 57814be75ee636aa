"""An ADK support agent that routes each question to a specialist or the generalist.

``adk run examples/routed_agent`` and ``adk web examples`` pick up ``root_agent``.
The two agents differ in instruction and tools, not only in model: billing
questions go to a billing specialist that looks invoices up; everything else,
and billing questions while the specialist's model is down, go to the
general agent. The models are scripted stand-ins from ``routed_llm.testing``,
so the example runs offline; swap in ``Gemini(...)`` for real ones.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from google.adk.agents import LlmAgent
from google.adk.models.llm_request import LlmRequest
from google.adk.models.llm_response import LlmResponse
from google.genai import types

from routed_llm import PreRoutingStrategy, RoutedAgent, RoutingContext, WithFallback
from routed_llm.testing import ScriptedLlm, Step

BILLING_WORDS = re.compile(
    r"\b(invoice|bill|billing|refund|charge|payment|factura|rechnung)\w*", re.IGNORECASE
)


@dataclass
class Outage:
    """Whether the billing specialist's model is down (the demo switches it)."""

    down: bool = False


billing_outage = Outage()


def lookup_invoice(invoice_id: str) -> dict[str, str]:
    """Looks up an invoice's status by its id."""
    return {"invoice_id": invoice_id, "status": "paid on 2026-11-03"}


def search_help_center(query: str) -> dict[str, str]:
    """Searches the help center for an article."""
    return {"article": "How to reach us", "summary": "Write to help@example.com; we answer within a day."}


def answer(request: LlmRequest, part: types.Part) -> LlmResponse:
    """A model response carrying ``part``, with token counts as a real model reports them."""
    prompt = sum(len((p.text or "").split()) for c in request.contents for p in c.parts or [])
    return LlmResponse(
        content=types.Content(role="model", parts=[part]),
        usage_metadata=types.GenerateContentResponseUsageMetadata(
            prompt_token_count=prompt, candidates_token_count=len((part.text or "x").split())
        ),
    )


def _billing_model(request: LlmRequest) -> Step:
    """The billing specialist's stand-in: calls lookup_invoice, then reads the result back."""
    if billing_outage.down:
        return ConnectionError("billing model unreachable")
    last = request.contents[-1].parts or []
    result = next((part.function_response for part in last if part.function_response), None)
    if result is not None:
        status = result.response or {}
        return answer(request, types.Part(text=f"Invoice {status['invoice_id']} was {status['status']}."))
    found = re.search(r"\d+", request.contents[-1].parts[0].text or "") if last else None
    call = types.FunctionCall(
        name="lookup_invoice", args={"invoice_id": found.group() if found else "unknown"}
    )
    return answer(request, types.Part(function_call=call))


def _general_model(request: LlmRequest) -> Step:
    """The general agent's stand-in: answers from its instruction's tone."""
    question = (request.contents[-1].parts or [types.Part(text="")])[0].text or ""
    text = f"Happy to help with {question!r}: write to help@example.com and we'll answer within a day."
    return answer(request, types.Part(text=text))


billing = LlmAgent(
    name="billing",
    model=ScriptedLlm(model="billing-model", script=_billing_model),
    instruction="You are the billing specialist. Look invoices up with lookup_invoice; never guess.",
    tools=[lookup_invoice],
)
general = LlmAgent(
    name="general",
    model=ScriptedLlm(model="general-model", script=_general_model),
    instruction="You are a friendly general support agent.",
    tools=[search_help_center],
)


def billing_questions(ctx: RoutingContext) -> str | None:
    """Sends questions about invoices, bills and payments to the billing specialist."""
    if BILLING_WORDS.search(ctx.input_text):
        ctx.annotate(rule="billing words")
        return "billing"
    return None


root_agent = RoutedAgent(
    name="support",
    description="Answers support questions.",
    agents={"billing": billing, "general": general},
    router=WithFallback(PreRoutingStrategy(billing_questions), fallback_order=["general"]),
)
