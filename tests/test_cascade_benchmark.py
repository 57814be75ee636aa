"""The cascade benchmark: its questions, answer checking and figures (the full run is by hand)."""

from __future__ import annotations

import pytest

from benchmarks.cascade import Result, ask, auroc, cascade_rows, report
from benchmarks.cascade_questions import Question, check, generate

QUESTIONS = generate()


def by_text(text: str) -> Question:
    return next(question for question in QUESTIONS if question.text == text)


def result(confidence: float, correct: bool) -> Result:
    return Result(Question("arithmetic", "What is 1 + 1?", "2"), "", confidence, correct)


def test_the_generator_makes_at_least_200_distinct_questions_of_every_kind_the_same_every_time():
    assert len({question.text for question in QUESTIONS}) == len(QUESTIONS) >= 200
    assert {question.kind for question in QUESTIONS} == {"arithmetic", "units", "capitals", "dates"}
    assert generate() == QUESTIONS


def test_every_questions_own_answer_checks():
    assert [question.text for question in QUESTIONS if not check(question, question.answer)] == []


@pytest.mark.parametrize(
    ("answer", "right"),
    [
        ("148", True),
        ("67 + 81 = 148.", True),
        ("The sum is 148.0", True),
        ("67 + 81 = 149", False),
        ("It is 148, or maybe 158.", False),
        ("one hundred and forty-eight", False),
        ("", False),
    ],
)
def test_a_number_answer_is_right_when_the_only_new_number_it_states_is_the_answer(answer, right):
    assert check(by_text("What is 67 + 81?"), answer) is right


@pytest.mark.parametrize(
    ("answer", "right"),
    [
        ("Rabat", True),
        ("The capital of Morocco is rabat.", True),
        ("Casablanca", False),
        ("Rabat or Cairo", False),
        ("Rabattage", False),
    ],
)
def test_a_name_answer_is_right_when_it_names_the_answer_and_no_rival(answer, right):
    assert check(by_text("What is the capital of Morocco?"), answer) is right


def test_a_number_with_thousands_separators_reads_as_one_number():
    question = next(q for q in QUESTIONS if q.kind == "units" and int(q.answer) >= 1000)

    assert check(question, f"{int(question.answer):,}")


def test_auroc_is_the_chance_a_right_answer_outscores_a_wrong_one():
    assert auroc([0.9, 0.8, 0.2, 0.1], [True, True, False, False]) == 1.0
    assert auroc([0.1, 0.2, 0.8, 0.9], [True, True, False, False]) == 0.0
    assert auroc([0.5, 0.5], [True, False]) == 0.5
    assert auroc([0.9, 0.3, 0.5, 0.1], [True, True, False, False]) == 0.75


def test_auroc_needs_both_right_and_wrong_answers():
    with pytest.raises(ValueError, match="at least one right and one wrong"):
        auroc([0.9, 0.8], [True, True])


def test_the_cascade_escalates_answers_below_the_threshold_and_counts_them_right():
    results = [result(0.9, True), result(0.8, False), result(0.4, False), result(0.3, True)]

    [row] = cascade_rows(results, thresholds=[0.5])

    assert row.escalated == 0.5
    assert row.cascade == 0.75  # The 0.9 answer kept right, the two escalated ones right.
    assert row.random == 0.75  # 50% right, half of the wrong half escalated.
    assert row.perfect == 1.0


async def test_three_questions_through_the_real_device_are_scored_and_reported():
    pytest.importorskip("llama_cpp", reason="install the 'ondevice' extra (nox does)")
    from routed_llm.ondevice import LlamaCppLlm

    three = [by_text("What is 67 + 81?"), by_text("What is the capital of Morocco?"), QUESTIONS[-1]]

    results = await ask(LlamaCppLlm(n_ctx=512), three)

    assert [r.question for r in results] == three
    assert all(0 < r.confidence <= 1 and r.answer for r in results)
    assert [r.correct for r in results] == [check(r.question, r.answer) for r in results]
    assert "Questions: 3; on-device accuracy:" in report(results, seconds=1.0)
