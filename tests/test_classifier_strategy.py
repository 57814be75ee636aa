"""ClassifierStrategy: routing the first pick on ADK's own classifier, as a RoutedLlm router."""

from __future__ import annotations

import asyncio
import json
import logging
import re

import pytest
from google.adk.agents import LlmAgent
from google.adk.labs.classifiers import Binary, Choice, LlmClassifier, Score
from google.adk.models.llm_request import LlmRequest
from google.genai import types

from routed_llm import (
    ClassifierStrategy,
    HealthTracker,
    RoutedLlm,
    RoutingPlugin,
    hybrid_model_on_device_cloud,
)
from routed_llm.invocation import InvocationInfo, invocation_scope
from routed_llm.strategies import (
    CLOUD,
    ON_DEVICE,
    FirstMatch,
    PreRoutingStrategy,
    StickyPerInvocation,
    WithFallback,
)
from routed_llm.testing import ScriptedLlm
from tests.conftest import collect, make_request, make_runner, run_agent, texts

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


async def ask(llm: RoutedLlm, *texts_: str, invocation: InvocationInfo | None = None) -> list:
    """Calls ``llm`` outside ADK, as part of ``invocation`` (None: of no invocation)."""
    with invocation_scope(invocation):
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


async def test_the_classifier_reads_the_text_of_the_turns_the_model_will_read_joined_by_newlines():
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

    events, _ = await run_agent(agent, "Plan a three-city rail trip.", plugins=[RoutingPlugin()])

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
        (
            lambda c: ClassifierStrategy(c, SENSITIVE, {True: "a", False: "b"}, private={"yes"}),
            ValueError,
            r"private\) names 'yes', not labels of the question",
        ),
        (
            lambda c: ClassifierStrategy(c, SENSITIVE, {True: "a", False: "b"}, private=True),
            TypeError,
            r"private=...\) is a collection of labels, e.g. \{True\}",
        ),
        (
            lambda c: ClassifierStrategy(c, SENSITIVE, {True: "a", False: "b"}, timeout=0),
            ValueError,
            r"timeout=...\) is a number of seconds above 0, or None; got 0",
        ),
        (
            lambda c: ClassifierStrategy(c, SENSITIVE, {True: "a", False: "b"}, text="input"),
            TypeError,
            r"text=...\) must be callable",
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
        "unknown-private-label",
        "private-not-a-collection",
        "zero-timeout",
        "text-not-callable",
    ],
)
def test_bad_arguments_fail_at_construction_saying_how_to_fix_them(build, error, message):
    with pytest.raises(error, match=message):
        build(classifier(answering({})))


def test_declared_keys_are_the_keys_of_the_routes():
    strategy = ClassifierStrategy(classifier(answering({})), SENSITIVE, {True: "local", False: "cloud"})

    assert strategy.declared_keys == {"local", "cloud"}


# What the model would receive, and a privacy gate on it.

SSN = re.compile(r"\d{3}-\d{2}-\d{4}")


def pii_detector() -> ScriptedLlm:
    """A perfect PII classifier: probability 1 when the text it is shown holds a social security number."""

    def reply(request: LlmRequest) -> str:
        shown = request.contents[0].parts[0].text
        return json.dumps({"route": {"probability": 1.0 if SSN.search(shown) else 0.0}})

    return ScriptedLlm(model="pii-detector", script=reply)


def privacy_gate(detector: ScriptedLlm, **options) -> ClassifierStrategy:
    return ClassifierStrategy(
        classifier(detector),
        SENSITIVE,
        {True: ON_DEVICE, False: CLOUD},
        private={True},
        **options,
    )


def shown(detector: ScriptedLlm) -> list[str]:
    """The texts the classifier was asked about, in order."""
    return [call.contents[0].parts[0].text for call in detector.calls]


def look_up_customer(customer_id: str) -> dict[str, str]:
    """Looks up a customer's record (a tool for the tests)."""
    return {"name": "Jane Doe", "ssn": "123-45-6789"}


def calls_the_tool_then_answers(times: int) -> ScriptedLlm:
    """A model that calls ``look_up_customer`` until it has ``times`` responses, then answers."""

    def reply(request: LlmRequest) -> types.Part | str:
        responses = sum(1 for content in request.contents for part in content.parts if part.function_response)
        if responses < times:
            call = types.FunctionCall(name="look_up_customer", args={"customer_id": f"c{responses}"})
            return types.Part(function_call=call)
        return "done"

    return ScriptedLlm(model="tool-caller", script=reply)


async def run_with_plugin(agent: LlmAgent, text: str, **state: str) -> list:
    runner = make_runner(agent, plugins=[RoutingPlugin()])
    session = await runner.session_service.create_session(app_name="test_app", user_id="user", state=state)
    message = types.Content(role="user", parts=[types.Part(text=text)])
    return [
        event async for event in runner.run_async(user_id="user", session_id=session.id, new_message=message)
    ]


async def test_by_default_the_classifier_reads_the_system_instruction_turns_and_function_traffic():
    detector = pii_detector()
    request = make_request("Summarise the record.")
    request.config.system_instruction = "Be brief."
    request.contents.append(
        types.Content(
            role="user",
            parts=[types.Part(function_response=types.FunctionResponse(name="look_up", response={"ok": 1}))],
        )
    )
    llm = RoutedLlm(models=models(ON_DEVICE, CLOUD), router=privacy_gate(detector))

    await ask_request(llm, request)

    assert shown(detector) == ['Be brief.\nSummarise the record.\n{"name": "look_up", "response": {"ok": 1}}']


async def ask_request(llm: RoutedLlm, request: LlmRequest) -> list:
    """Calls ``llm`` outside ADK, as part of no invocation."""
    with invocation_scope(None):
        return await collect(llm.generate_content_async(request))


async def test_text_narrows_what_the_classifier_reads():
    detector = pii_detector()
    request = make_request("Summarise the record.")
    request.config.system_instruction = "Be brief."
    llm = RoutedLlm(
        models=models(ON_DEVICE, CLOUD), router=privacy_gate(detector, text=lambda ctx: ctx.input_text)
    )

    await ask_request(llm, request)

    assert shown(detector) == ["Summarise the record."]


async def test_a_social_security_number_templated_into_the_instruction_keeps_the_request_local():
    device, cloud = models(ON_DEVICE, CLOUD).values()
    agent = LlmAgent(
        name="assistant",
        model=hybrid_model_on_device_cloud(
            on_device=device,
            cloud=cloud,
            strategy=WithFallback(privacy_gate(pii_detector()), fallback_order=[ON_DEVICE]),
        ),
        instruction="The customer's social security number is {ssn}.",
    )

    events = await run_with_plugin(agent, "Fill in the form.", ssn="123-45-6789")

    assert [e.custom_metadata["routed_llm"]["key"] for e in events if e.content] == [ON_DEVICE]
    assert cloud.calls == []


async def test_a_social_security_number_in_a_function_response_keeps_the_rest_of_the_tool_loop_local():
    device = ScriptedLlm(model="device", script=lambda request: "local answer")
    cloud = calls_the_tool_then_answers(1)
    agent = LlmAgent(
        name="assistant",
        model=hybrid_model_on_device_cloud(
            on_device=device,
            cloud=cloud,
            strategy=WithFallback(privacy_gate(pii_detector()), fallback_order=[ON_DEVICE]),
        ),
        tools=[look_up_customer],
    )

    events = await run_with_plugin(agent, "Look up customer c0.")

    served = [e.custom_metadata["routed_llm"]["key"] for e in events if e.custom_metadata]
    assert served == [CLOUD, ON_DEVICE]
    assert len(cloud.calls) == 1


async def test_a_request_with_an_image_the_classifier_cannot_read_goes_where_private_requests_go():
    detector = answering({"probability": 0.0})
    device, cloud = models(ON_DEVICE, CLOUD).values()
    request = make_request("What does this document say?")
    request.contents[0].parts.append(types.Part.from_bytes(data=b"\x89PNG...", mime_type="image/png"))
    llm = hybrid_model_on_device_cloud(
        on_device=device,
        cloud=cloud,
        strategy=WithFallback(privacy_gate(detector), fallback_order=[CLOUD, ON_DEVICE]),
    )

    [response] = await ask_request(llm, request)

    assert response.custom_metadata["routed_llm"]["key"] == ON_DEVICE
    assert (cloud.calls, detector.calls) == ([], [])


async def test_a_text_function_that_returns_no_string_is_a_clear_error():
    llm = RoutedLlm(
        models=models(ON_DEVICE, CLOUD), router=privacy_gate(pii_detector(), text=lambda ctx: ctx.contents)
    )

    with pytest.raises(TypeError, match=r"text=...\) returned list; it returns the text to classify, a str"):
        await ask(llm)


# Bounded and not repeated.


async def test_a_tool_loop_of_ten_model_calls_classifies_once():
    tiny = answering({"simple": 0.9, "complex": 0.1})
    small = calls_the_tool_then_answers(9)
    llm = RoutedLlm(models={"small": small, "large": models("large")["large"]}, router=complexity(tiny))
    agent = LlmAgent(name="assistant", model=llm, tools=[look_up_customer])

    await run_with_plugin(agent, "Look up customer c0.")

    assert (len(small.calls), len(tiny.calls)) == (10, 1)


async def test_a_private_tool_loop_of_ten_model_calls_classifies_once():
    detector = pii_detector()
    device = calls_the_tool_then_answers(9)
    agent = LlmAgent(
        name="assistant",
        model=hybrid_model_on_device_cloud(
            on_device=device,
            cloud=models(CLOUD)[CLOUD],
            strategy=WithFallback(privacy_gate(detector), fallback_order=[ON_DEVICE]),
        ),
        tools=[look_up_customer],
    )

    await run_with_plugin(agent, "My SSN is 987-65-4321; look up customer c0.")

    assert (len(device.calls), len(detector.calls)) == (10, 1)


async def test_a_public_tool_loop_classifies_only_what_each_model_call_adds():
    detector = answering({"probability": 0.0})
    cloud = calls_the_tool_then_answers(2)
    agent = LlmAgent(
        name="assistant",
        model=hybrid_model_on_device_cloud(
            on_device=models(ON_DEVICE)[ON_DEVICE],
            cloud=cloud,
            strategy=WithFallback(privacy_gate(detector), fallback_order=[ON_DEVICE]),
        ),
        tools=[look_up_customer],
    )

    await run_with_plugin(agent, "Look up customer c0.")

    [first, *additions] = shown(detector)
    assert first.endswith("Look up customer c0.")
    assert [json.loads(line)["name"] for text in additions for line in text.splitlines()] == [
        "look_up_customer"
    ] * 4
    assert len(additions) == 2


async def test_the_same_text_is_classified_once_within_an_invocation_without_any_tool():
    tiny = answering({"simple": 0.9, "complex": 0.1})
    llm = RoutedLlm(models=models("small", "large"), router=complexity(tiny))
    agent = LlmAgent(name="assistant", model=llm)
    runner = make_runner(agent, plugins=[RoutingPlugin()])
    session = await runner.session_service.create_session(app_name="test_app", user_id="user")

    for _ in range(2):  # Two invocations: each is classified.
        message = types.Content(role="user", parts=[types.Part(text="Hi")])
        async for _event in runner.run_async(user_id="user", session_id=session.id, new_message=message):
            pass

    assert len(tiny.calls) == 2


class NeverAnswers(ScriptedLlm):
    """A classifier model that records each call and never answers it."""

    def __init__(self) -> None:
        super().__init__(model="never-answers", script=lambda request: "{}")

    async def generate_content_async(self, llm_request, stream=False):
        async for response in super().generate_content_async(llm_request, stream):
            await asyncio.Event().wait()  # Nobody sets it.
            yield response


def never_answers() -> NeverAnswers:
    return NeverAnswers()


async def test_a_classifier_past_its_timeout_makes_no_decision_so_the_tail_serves(caplog):
    caplog.set_level(logging.WARNING, logger="routed_llm.strategies.classifier")
    llm = RoutedLlm(
        models=models(ON_DEVICE, CLOUD),
        router=WithFallback(privacy_gate(never_answers(), timeout=0.01), fallback_order=[ON_DEVICE]),
    )

    responses = await ask(llm)

    assert texts(responses) == ["on_device answer"]
    [record] = [r for r in caplog.records if r.name == "routed_llm.strategies.classifier"]
    assert "took over 0.01s; no decision" in record.getMessage()


async def test_a_timeout_is_logged_once_per_invocation_and_the_classifier_not_asked_again(caplog):
    caplog.set_level(logging.WARNING, logger="routed_llm.strategies.classifier")
    hanging = never_answers()
    device = calls_the_tool_then_answers(2)
    agent = LlmAgent(
        name="assistant",
        model=hybrid_model_on_device_cloud(
            on_device=device,
            cloud=models(CLOUD)[CLOUD],
            strategy=WithFallback(privacy_gate(hanging, timeout=0.01), fallback_order=[ON_DEVICE]),
        ),
        tools=[look_up_customer],
    )

    await run_with_plugin(agent, "Look up customer c0.")

    assert len(device.calls) == 3
    assert len(hanging.calls) == 1
    assert len([r for r in caplog.records if r.name == "routed_llm.strategies.classifier"]) == 1


async def test_a_private_conversation_stays_private_after_the_classifier_failed_in_its_invocation():
    answers = iter([{"probability": 1.0}, ConnectionError("classifier down")])

    def reply(request: LlmRequest):
        answer = next(answers)
        return answer if isinstance(answer, Exception) else json.dumps({"route": answer})

    device, cloud = models(ON_DEVICE, CLOUD).values()
    llm = hybrid_model_on_device_cloud(
        on_device=device,
        cloud=cloud,
        strategy=WithFallback(
            privacy_gate(ScriptedLlm(model="flaky", script=reply)), fallback_order=[CLOUD, ON_DEVICE]
        ),
    )
    invocation = InvocationInfo("app", "user", "session", "invocation-1", "assistant", {})

    await ask(llm, "My SSN is 123-45-6789.", invocation=invocation)  # Private.
    await ask(llm, "Another branch of the invocation.", invocation=invocation)  # The classifier fails here.
    [response] = await ask(
        llm, "My SSN is 123-45-6789.", "Noted.", "Fill in the form.", invocation=invocation
    )

    assert response.custom_metadata["routed_llm"]["key"] == ON_DEVICE


# A private label's route is final.


def sure_it_is_private() -> ScriptedLlm:
    return answering({"probability": 1.0})


async def test_a_private_label_whose_key_is_unavailable_is_still_served_there_never_by_the_tail():
    health = HealthTracker(failure_threshold=1, cooldown=30.0, clock=lambda: 0.0)
    health.record_failure(ON_DEVICE, ConnectionError("device busy"), "transient")
    device, cloud = models(ON_DEVICE, CLOUD).values()
    llm = hybrid_model_on_device_cloud(
        on_device=device,
        cloud=cloud,
        strategy=WithFallback(privacy_gate(sure_it_is_private()), fallback_order=[CLOUD, ON_DEVICE]),
        health=health,
    )

    [response] = await ask(llm)

    assert response.custom_metadata["routed_llm"]["key"] == ON_DEVICE
    assert cloud.calls == []


async def test_a_private_request_whose_device_fails_ends_with_its_error_never_reaching_the_cloud():
    device = ScriptedLlm(model="device", script=[ConnectionError("device crashed")])
    cloud = models(CLOUD)[CLOUD]
    llm = hybrid_model_on_device_cloud(
        on_device=device,
        cloud=cloud,
        strategy=WithFallback(privacy_gate(sure_it_is_private()), fallback_order=[CLOUD, ON_DEVICE]),
    )

    with pytest.raises(ConnectionError, match="device crashed"):
        await ask(llm)
    assert cloud.calls == []


async def test_a_public_request_whose_device_fails_still_falls_back_to_the_tail():
    llm = hybrid_model_on_device_cloud(
        on_device=ScriptedLlm(model="device", script=[ConnectionError("device crashed")]),
        cloud=models(CLOUD)[CLOUD],
        strategy=WithFallback(
            ClassifierStrategy(
                classifier(answering({"probability": 1.0})), SENSITIVE, {True: ON_DEVICE, False: CLOUD}
            ),
            fallback_order=[CLOUD],
        ),
    )

    [response] = await ask(llm)

    assert response.custom_metadata["routed_llm"]["key"] == CLOUD


async def test_the_confinement_is_recorded_with_the_route():
    llm = hybrid_model_on_device_cloud(
        on_device=models(ON_DEVICE)[ON_DEVICE],
        cloud=models(CLOUD)[CLOUD],
        strategy=WithFallback(privacy_gate(sure_it_is_private()), fallback_order=[ON_DEVICE]),
    )

    [response] = await ask(llm)

    assert response.custom_metadata["routed_llm"]["confined_to"] == ON_DEVICE


async def test_a_sticky_invocation_still_keeps_a_tool_result_holding_private_data_off_the_cloud():
    cloud = calls_the_tool_then_answers(1)
    device = models(ON_DEVICE)[ON_DEVICE]
    agent = LlmAgent(
        name="assistant",
        model=hybrid_model_on_device_cloud(
            on_device=device,
            cloud=cloud,
            strategy=StickyPerInvocation(
                WithFallback(privacy_gate(pii_detector()), fallback_order=[CLOUD, ON_DEVICE])
            ),
        ),
        tools=[look_up_customer],
    )

    await run_with_plugin(agent, "Look up customer c0.")

    assert len(cloud.calls) == 1
    assert len(device.calls) == 1
