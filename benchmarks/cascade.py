"""Does the cascade pay? On-device confidence against correctness, on SmolLM2 with llama.cpp.

Asks the real SmolLM2-135M-Instruct (``LlamaCppLlm``, the ``ondevice``
extra) the 220 labelled questions of ``benchmarks/cascade_questions.py`` at
temperature 0, and reads each answer's confidence, ``exp(avg_logprobs)``.
It reports:

* the on-device accuracy, overall and per kind;
* the AUROC of the confidence against correctness (0.5: it tells right from
  wrong no better than chance; 1: perfectly), with a bootstrap 95% interval;
* for each threshold, the share of questions a "device first, cloud if
  unsure" cascade escalates (confidence below the threshold) and its
  accuracy if the cloud answers every escalated question rightly, beside
  random escalation of the same share and a perfect judge (one that
  escalates exactly the wrong answers first).

Run ``python -m benchmarks.cascade`` (``nox -s benchmark`` does); it prints
the Markdown that ``docs/cascade.md`` shows. ``--limit N`` asks the first N
questions only.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass

from google.adk.models.llm_request import LlmRequest
from google.genai import types

from benchmarks.cascade_questions import Question, check, generate
from routed_llm.ondevice import LlamaCppLlm

INSTRUCTION = "Answer with only the answer: a number, a name or a day. No explanation."
MAX_OUTPUT_TOKENS = 48
THRESHOLDS = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9)
BOOTSTRAP_SAMPLES = 2000


@dataclass(frozen=True)
class Result:
    """One question as the device answered it.

    Attributes:
        question: The question.
        answer: The device's text.
        confidence: ``exp(avg_logprobs)`` of the answer.
        correct: Whether ``check`` accepts the answer.
    """

    question: Question
    answer: str
    confidence: float
    correct: bool


@dataclass(frozen=True)
class Row:
    """The cascade at one threshold.

    Attributes:
        threshold: Answers less confident than this go to the cloud.
        escalated: The share of questions escalated.
        cascade: The cascade's accuracy, the cloud assumed right.
        random: The expected accuracy of escalating the same share at random.
        perfect: The accuracy of escalating the same share, wrong answers first.
    """

    threshold: float
    escalated: float
    cascade: float
    random: float
    perfect: float


def request(question: Question) -> LlmRequest:
    """The request the device gets for ``question``."""
    return LlmRequest(
        contents=[types.Content(role="user", parts=[types.Part(text=question.text)])],
        config=types.GenerateContentConfig(
            system_instruction=INSTRUCTION, temperature=0.0, max_output_tokens=MAX_OUTPUT_TOKENS
        ),
    )


async def ask(device: LlamaCppLlm, questions: Sequence[Question]) -> list[Result]:
    """Asks the device every question, one after the other, and scores each answer."""
    results = []
    for question in questions:
        [response] = [response async for response in device.generate_content_async(request(question))]
        text = "".join(part.text or "" for part in response.content.parts or ()) if response.content else ""
        if response.avg_logprobs is None:
            raise RuntimeError(f"The device gave no avg_logprobs for {question.text!r}.")
        confidence = math.exp(response.avg_logprobs)
        results.append(Result(question, text.strip(), confidence, check(question, text)))
    return results


def auroc(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """The area under the ROC curve: the chance a right answer outscores a wrong one (ties count half).

    Raises:
        ValueError: If the labels are all the same (no right or no wrong answer to compare).
    """
    right = [score for score, label in zip(scores, labels, strict=True) if label]
    wrong = [score for score, label in zip(scores, labels, strict=True) if not label]
    if not right or not wrong:
        raise ValueError("AUROC needs at least one right and one wrong answer.")
    wins = sum((r > w) + 0.5 * (r == w) for r in right for w in wrong)
    return wins / (len(right) * len(wrong))


def auroc_interval(
    scores: Sequence[float], labels: Sequence[bool], *, samples: int = BOOTSTRAP_SAMPLES, seed: int = 0
) -> tuple[float, float]:
    """A bootstrap 95% interval of :func:`auroc`, resampling the questions."""
    rng = random.Random(seed)
    indices = range(len(scores))
    values = []
    while len(values) < samples:
        picked = rng.choices(indices, k=len(scores))
        labels_ = [labels[i] for i in picked]
        if any(labels_) and not all(labels_):
            values.append(auroc([scores[i] for i in picked], labels_))
    values.sort()
    return values[int(0.025 * samples)], values[int(0.975 * samples) - 1]


def cascade_rows(results: Sequence[Result], thresholds: Sequence[float] = THRESHOLDS) -> list[Row]:
    """The cascade at each threshold, beside random escalation and a perfect judge of the same share."""
    total = len(results)
    accuracy = sum(result.correct for result in results) / total
    rows = []
    for threshold in thresholds:
        escalated = [result for result in results if result.confidence < threshold]
        kept_right = sum(result.correct for result in results if result.confidence >= threshold)
        share = len(escalated) / total
        rows.append(
            Row(
                threshold=threshold,
                escalated=share,
                cascade=(kept_right + len(escalated)) / total,
                random=accuracy + share * (1 - accuracy),
                perfect=min(1.0, accuracy + share),
            )
        )
    return rows


def report(results: Sequence[Result], seconds: float) -> str:
    """The Markdown summary of a run."""
    labels = [result.correct for result in results]
    scores = [result.confidence for result in results]
    accuracy = sum(labels) / len(results)
    lines = [
        f"Questions: {len(results)}; on-device accuracy: **{accuracy:.1%}** "
        f"({sum(labels)} right); {seconds / len(results):.2f} s a question.",
        "",
    ]
    if any(labels) and not all(labels):
        low, high = auroc_interval(scores, labels)
        lines.append(
            f"AUROC of exp(avg_logprobs) against correctness: **{auroc(scores, labels):.2f}** "
            f"(bootstrap 95% interval {low:.2f} to {high:.2f})."
        )
        right = [score for score, label in zip(scores, labels, strict=True) if label]
        wrong = [score for score, label in zip(scores, labels, strict=True) if not label]
        lines.append(
            f"Median confidence: {statistics.median(right):.2f} when right, "
            f"{statistics.median(wrong):.2f} when wrong."
        )
    else:
        lines.append("AUROC: undefined (every answer was right, or every one wrong).")
    lines += ["", "| kind | questions | accuracy | AUROC |", "|---|---:|---:|---:|"]
    for kind in dict.fromkeys(result.question.kind for result in results):
        of_kind = [result for result in results if result.question.kind == kind]
        kind_labels = [result.correct for result in of_kind]
        kind_auroc = (
            f"{auroc([r.confidence for r in of_kind], kind_labels):.2f}"
            if any(kind_labels) and not all(kind_labels)
            else "n/a"
        )
        lines.append(f"| {kind} | {len(of_kind)} | {sum(kind_labels) / len(of_kind):.1%} | {kind_auroc} |")
    lines += [
        "",
        "| threshold | escalated | cascade accuracy | random escalation | perfect judge |",
        "|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {row.threshold:.2f} | {row.escalated:.1%} | {row.cascade:.1%} | {row.random:.1%} | "
        f"{row.perfect:.1%} |"
        for row in cascade_rows(results)
    ]
    return "\n".join(lines)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="ask only the first N questions")
    parser.add_argument("--show", action="store_true", help="print every answer too")
    args = parser.parse_args()
    questions = generate()[: args.limit]
    device = LlamaCppLlm()
    await device.load()
    started = time.perf_counter()
    results = await ask(device, questions)
    seconds = time.perf_counter() - started
    if args.show:
        for result in results:
            mark = "right" if result.correct else "wrong"
            print(f"{result.confidence:.2f} {mark:5} {result.question.text} -> {result.answer!r}")
        print()
    print(report(results, seconds))


if __name__ == "__main__":
    asyncio.run(main())
