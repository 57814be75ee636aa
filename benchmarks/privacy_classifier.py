"""The on-device classifier as a privacy gate, alone and combined with the hybrid demo's keyword rule.

Asks ADK's ``LlmClassifier`` over the on-device SmolLM2-135M (structured
output through llama.cpp's grammar), inside a ``ClassifierStrategy``, whether
each phrasing of the hybrid demo's table (``examples/hybrid/phrasings.py``:
43 private, 22 public) holds private matters. It reads what the model would
receive: the demo's instruction and the phrasing. A private phrasing
"reaches the cloud" when the gate does not keep it local; a public one is
"kept local" when it does. A classifier that fails makes no decision, and a
privacy gate's tail keeps the request local, so a failure counts as local.
The paraphrases (private matters in plain words, which the keyword rule is
known to miss) are shown apart: the rule was written against the table.

Run ``python benchmarks/privacy_classifier.py`` (needs the ``ondevice``
extra); it prints the Markdown table ``docs/on-device.md`` shows. The
timings are this machine's, one decision at a time.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from pathlib import Path

from google.adk.labs.classifiers import Binary, LlmClassifier
from google.adk.models.llm_request import LlmRequest
from google.genai import types
from pydantic import Field

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from examples.hybrid.phrasings import PARAPHRASES, PRIVATE, PUBLIC
from examples.hybrid.privacy import looks_private
from routed_llm.ondevice import LlamaCppLlm
from routed_llm.strategies import CLOUD, ON_DEVICE, ClassifierStrategy, RoutingContext

INSTRUCTION = "You are a helpful assistant. Answer in one short sentence."  # The demo agent's.
QUESTION = Binary(
    instructions=(
        "Is this request private: does it mention the user's credentials, health, money, identity "
        "numbers or contact details, or anything they would not tell a stranger?"
    )
)


class Measured(LlmClassifier):
    """``LlmClassifier`` that keeps the probability of each answer."""

    probabilities: list[float] = Field(default_factory=list)

    async def classify(self, *, input, questions):  # type: ignore[no-untyped-def]  # noqa: A002 - ADK's name.
        response = await super().classify(input=input, questions=questions)
        self.probabilities.append(response.answers["route"].probability)
        return response


class Counted(LlamaCppLlm):
    """The device model, keeping the prompt and output tokens of each call."""

    tokens: list[tuple[int, int]] = Field(default_factory=list)

    async def generate_content_async(self, llm_request, stream=False):  # type: ignore[no-untyped-def]
        async for response in super().generate_content_async(llm_request, stream):
            if response.usage_metadata and not response.partial:
                usage = response.usage_metadata
                self.tokens.append((usage.prompt_token_count or 0, usage.candidates_token_count or 0))
            yield response


async def decide(gate: ClassifierStrategy, text: str) -> tuple[bool, float]:
    """Whether the gate keeps ``text`` local, and how long it took to decide."""
    request = LlmRequest(
        contents=[types.Content(role="user", parts=[types.Part(text=text)])],
        config=types.GenerateContentConfig(system_instruction=INSTRUCTION),
    )
    started = time.perf_counter()
    key = await gate.decide(RoutingContext(request, models={}))
    return key != CLOUD, time.perf_counter() - started


async def main() -> None:
    device = Counted(n_ctx=1024)
    await device.load()
    classifier = Measured(model=device, generate_content_config=types.GenerateContentConfig(temperature=0.0))
    gate = ClassifierStrategy(
        classifier,
        QUESTION,
        {True: ON_DEVICE, False: CLOUD},
        private={True},
    )
    rows: dict[str, list[tuple[bool, bool]]] = {}  # Per table: (classifier local, keyword local).
    latencies = []
    for name, texts in (("private", PRIVATE), ("public", PUBLIC), ("paraphrases", PARAPHRASES)):
        rows[name] = []
        for text in texts:
            local, seconds = await decide(gate, text)
            latencies.append(seconds)
            rows[name].append((local, looks_private(f"{INSTRUCTION}\n{text}")))

    def out(name: str, combine: str) -> int:
        """Private phrasings of ``name`` that reach the cloud."""
        return sum(not _local(row, combine) for row in rows[name])

    kept = {combine: sum(_local(row, combine) for row in rows["public"]) for combine in _GATES}
    print(f"| gate | private reaching the cloud (of {len(PRIVATE)}) | public kept local (of {len(PUBLIC)}) "
          f"| paraphrases reaching the cloud (of {len(PARAPHRASES)}) |")  # fmt: skip
    print("|---|---|---|---|")
    for combine, label in _GATES.items():
        print(f"| {label} | {out('private', combine)} | {kept[combine]} | {out('paraphrases', combine)} |")
    latencies.sort()
    print(
        f"\nLatency per classifier decision ({len(latencies)} decisions): median "
        f"{statistics.median(latencies) * 1000:.0f} ms, p90 "
        f"{latencies[int(0.9 * (len(latencies) - 1))] * 1000:.0f} ms, max {latencies[-1] * 1000:.0f} ms; "
        f"prompt {statistics.median(p for p, _ in device.tokens):.0f} tokens and output "
        f"{statistics.median(o for _, o in device.tokens):.0f} tokens (medians)."
    )
    answers = sorted(set(classifier.probabilities))
    print(f"Probabilities of 'private' the classifier gave: {', '.join(f'{p:g}' for p in answers)}.")


_GATES = {
    "keyword": "keyword rule",
    "classifier": "on-device classifier",
    "either": "keyword rule or classifier",
}


def _local(row: tuple[bool, bool], combine: str) -> bool:
    classifier, keyword = row
    return {"keyword": keyword, "classifier": classifier, "either": keyword or classifier}[combine]


if __name__ == "__main__":
    asyncio.run(main())
