"""ClassifierStrategy: routing the first pick on ADK's own classifier, as a RoutedLlm router."""

from __future__ import annotations

import json
import logging

import pytest
from google.adk.agents import LlmAgent
from google.adk.labs.classifiers import Binary, Choice, LlmClassifier, Score
from google.adk.models.llm_request import LlmRequest

from routed_llm import ClassifierStrategy, HealthTracker, RoutedLlm
from routed_llm.strategies import FirstMatch, PreRoutingStrategy, WithFallback
from routed_llm.testing import ScriptedLlm
from tests.conftest import collect, make_request, run_agent, texts

COMPLEXITY = Choice(
    instructions="How hard is this request to answer well?",
    criteria={"simple": "A fact, a lookup, a short reply", "complex": "Reasoning, code, several steps"},
)
SENSITIVE = Binary(instructions="Does the request contain personal data?")


def answering(answer: dict[str, float]) -> ScriptedLlm:
    """A small model that answers every question of the classifier's JSON schema with ``answer``."""

    def reply(request: LlmRequest) -> str:
        return json.dumps(dict.fromkeys(request.config.response_schema["required"], answer))

    return ScriptedLlm(model="tiny-classifier", script=reply)


def classifier(model: ScriptedLlm) -> LlmClassifier:
    return LlmClassifier(model=model)


def models(*keys: str) -> dict[str, ScriptedLlm]:
    return {
        key: ScriptedLlm(model=f"{key}-model", script=lambda request, key=key: f"{key} answer")
        for key in keys
    }


def complexity(model: ScriptedLlm) -> ClassifierStrategy:
    return ClassifierStrategy(classifier(model), COMPLEXITY, {"simple": "small", "complex": "large"})


async def ask(llm: RoutedLlm, *texts_: str) -> list:
    return await collect(llm.generate_content_async(make_request(*texts_)))


async def test_a_choice_routes_to_the_key_of_the_label_the_classifier_chose():
    llm = RoutedLlm(
        models=models("small", "large"), router=complexity(answering({"simple": 0.2, "complex": 0.8}))
    )

    responses = await ask(llm)

    assert texts(responses) == ["large answer"]


async def test_the_label_and_its_probability_are_recorded_with_the_route():
    llm = RoutedLlm(
        models=models("small", "large"), router=complexity(answering({"simple": 3, "complex": 1}))
    )

    [response] = await ask(llm)

    record = response.custom_metadata["routed_llm"]
    assert (record["key"], record["label"], record["label_probability"]) == ("small", "simple", 0.75)


async def test_the_classifier_reads_the_text_of_the_turns_the_model_will_read():
    tiny = answering({"simple": 1.0, "complex": 0.0})
    llm = RoutedLlm(models=models("small", "large"), router=complexity(tiny))

    await ask(llm, "What is 2 + 2?", "4", "And times 3?")

    [call] = tiny.calls
    assert [part.text for part in call.contents[0].parts] == ["What is 2 + 2?\n4\nAnd times 3?"]


@pytest.mark.parametrize(("probability", "served"), [(0.7, "local"), (0.69, "cloud")])
async def test_a_binary_routes_true_when_the_probability_reaches_the_threshold(probability, served):
    strategy = ClassifierStrategy(
        classifier(answering({"probability": probability})),
        SENSITIVE,
        {True: "local", False: "cloud"},
        threshold=0.7,
    )
    llm = RoutedLlm(models=models("local", "cloud"), router=strategy)

    [response] = await ask(llm)

    assert response.custom_metadata["routed_llm"]["key"] == served


async def test_a_binary_answered_false_records_the_probability_of_false():
    strategy = ClassifierStrategy(
        classifier(answering({"probability": 0.25})), SENSITIVE, {True: "local", False: "cloud"}
    )
    llm = RoutedLlm(models=models("local", "cloud"), router=strategy)

    [response] = await ask(llm)

    record = response.custom_metadata["routed_llm"]
    assert (record["label"], record["label_probability"]) == (False, 0.75)


@pytest.mark.parametrize(
    "broken_model",
    [
        ScriptedLlm(model="tiny-classifier", script=lambda request: ConnectionError("classifier down")),
        ScriptedLlm(model="tiny-classifier", script=lambda request: "simple, I think"),
        ScriptedLlm(model="tiny-classifier", script=lambda request: json.dumps({"other": {"simple": 1}})),
    ],
    ids=["raises", "not-json", "no-answer"],
)
async def test_a_failing_classifier_makes_no_decision_so_the_fallback_tail_serves(broken_model):
    router = WithFallback(complexity(broken_model), fallback_order=["large"])
    llm = RoutedLlm(models=models("small", "large"), router=router)

    responses = await ask(llm)

    assert texts(responses) == ["large answer"]
    assert "label" not in responses[0].custom_metadata["routed_llm"]


async def test_a_classifier_failure_is_logged_with_its_exception(caplog):
    caplog.set_level(logging.WARNING, logger="routed_llm.strategies.classifier")
    broken = ScriptedLlm(model="tiny-classifier", script=lambda request: ConnectionError("classifier down"))
    llm = RoutedLlm(
        models=models("small", "large"), router=WithFallback(complexity(broken), fallback_order=["large"])
    )

    await ask(llm)

    [record] = [r for r in caplog.records if r.name == "routed_llm.strategies.classifier"]
    assert record.levelno == logging.WARNING
    assert "no decision" in record.getMessage()
    assert isinstance(record.exc_info[1], ConnectionError)


async def test_first_match_asks_its_next_rule_when_the_classifier_fails():
    broken = ScriptedLlm(model="tiny-classifier", script=lambda request: ConnectionError("classifier down"))
    router = FirstMatch([complexity(broken), PreRoutingStrategy(lambda ctx: "small")])
    llm = RoutedLlm(models=models("small", "large"), router=router)

    assert texts(await ask(llm)) == ["small answer"]


async def test_a_failed_pick_falls_back_without_asking_the_classifier_again():
    tiny = answering({"simple": 0.9, "complex": 0.1})
    llm = RoutedLlm(
        models={
            "small": ScriptedLlm(model="small-model", script=[ConnectionError("device busy")]),
            "large": ScriptedLlm(model="large-model", script=["large answer"]),
        },
        router=WithFallback(complexity(tiny), fallback_order=["large"]),
    )

    responses = await ask(llm)

    assert texts(responses) == ["large answer"]
    assert responses[0].custom_metadata["routed_llm"]["failed_keys"] == ["small"]
    assert len(tiny.calls) == 1


async def test_a_label_whose_key_is_unavailable_leaves_the_pick_to_the_tail():
    health = HealthTracker(failure_threshold=1, cooldown=30.0, clock=lambda: 0.0)
    health.record_failure("small", ConnectionError("down"), "transient")
    llm = RoutedLlm(
        models=models("small", "large"),
        router=WithFallback(complexity(answering({"simple": 1, "complex": 0})), fallback_order=["large"]),
        health=health,
    )

    [response] = await ask(llm)

    record = response.custom_metadata["routed_llm"]
    assert (record["key"], record["label"]) == ("large", "simple")


async def test_an_llm_agent_on_a_classifier_routed_model_is_served_by_the_chosen_key():
    llm = RoutedLlm(
        models=models("small", "large"), router=complexity(answering({"simple": 0.1, "complex": 0.9}))
    )
    agent = LlmAgent(name="assistant", model=llm, instruction="Answer briefly.")

    events, _ = await run_agent(agent, "Plan a three-city rail trip.")

    [answer] = [event for event in events if event.content and event.content.parts]
    assert answer.content.parts[0].text == "large answer"
    assert answer.custom_metadata["routed_llm"]["label"] == "complex"


def test_routed_llm_rejects_routes_naming_keys_it_does_not_have():
    with pytest.raises(ValueError, match="'huge'"):
        RoutedLlm(
            models=models("small", "large"),
            router=ClassifierStrategy(
                classifier(answering({})), COMPLEXITY, {"simple": "small", "complex": "huge"}
            ),
        )


@pytest.mark.parametrize(
    ("build", "error", "message"),
    [
        (
            lambda c: ClassifierStrategy(c, COMPLEXITY, {"simple": "a", "hard": "b"}),
            ValueError,
            r"names 'hard', not labels of the question; its labels are 'complex', 'simple'",
        ),
        (
            lambda c: ClassifierStrategy(c, COMPLEXITY, {"simple": "a"}),
            ValueError,
            r"no key for 'complex'; map every label",
        ),
        (
            lambda c: ClassifierStrategy(c, SENSITIVE, {1: "a", 0: "b"}),
            ValueError,
            r"names 0, 1, not labels of the question; its labels are False, True",
        ),
        (
            lambda c: ClassifierStrategy(c, SENSITIVE, {True: "a"}),
            ValueError,
            r"no key for False",
        ),
        (
            lambda c: ClassifierStrategy(c, COMPLEXITY, {"simple": "a", "complex": "b"}, threshold=0.8),
            ValueError,
            "applies to Binary questions only",
        ),
        (
            lambda c: ClassifierStrategy(c, SENSITIVE, {True: "a", False: "b"}, threshold=1.5),
            ValueError,
            r"probability in \[0, 1\]",
        ),
        (
            lambda c: ClassifierStrategy(c, SENSITIVE, {True: "a", False: ""}),
            TypeError,
            r"routes\)\[False\] is a non-empty key string",
        ),
        (
            lambda c: ClassifierStrategy(c, COMPLEXITY, [("simple", "a"), ("complex", "b")]),
            TypeError,
            "maps each label to a key",
        ),
        (
            lambda c: ClassifierStrategy(c, Score(criteria=["easy", "hard"]), {"0": "a", "1": "b"}),
            TypeError,
            "is a Choice or a Binary; got Score",
        ),
        (
            lambda c: ClassifierStrategy(c.model, COMPLEXITY, {"simple": "a", "complex": "b"}),
            TypeError,
            r"got ScriptedLlm. For a model, wrap it: LlmClassifier\(model=...\)",
        ),
    ],
    ids=[
        "unknown-label",
        "missing-label",
        "numbers-for-a-binary",
        "binary-missing-false",
        "threshold-on-a-choice",
        "threshold-out-of-range",
        "empty-key",
        "routes-not-a-mapping",
        "score-question",
        "model-not-classifier",
    ],
)
def test_bad_arguments_fail_at_construction_saying_how_to_fix_them(build, error, message):
    with pytest.raises(error, match=message):
        build(classifier(answering({})))


def test_declared_keys_are_the_keys_of_the_routes():
    strategy = ClassifierStrategy(classifier(answering({})), SENSITIVE, {True: "local", False: "cloud"})

    assert strategy.declared_keys == {"local", "cloud"}
