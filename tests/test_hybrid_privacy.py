"""The hybrid demo's privacy rule keeps private prompts on the device.

The phrasings below were written from the categories the README promises to
keep local (credentials, health, finance, identity numbers) in English,
Spanish, French and German, before the rule was; they are not its keyword
list. Public ones must still reach the cloud, so the rule stays useful.
"""

from __future__ import annotations

import pytest
from google.adk.models.llm_request import LlmRequest
from google.genai import types

from examples.hybrid.privacy import privacy_rule
from routed_llm.strategies import ON_DEVICE, RoutingContext

PRIVATE = [
    # Credentials.
    "I forgot my passwords for my banking app",
    "Can you check whether my PIN 4821 is secure enough?",
    "Reset the login credentials for my work email",
    "Here is my API key, please debug the request with it",
    "The two-factor code they texted me is 552 301",
    "Olvidé mi contraseña del correo",
    "J'ai oublié mon mot de passe",
    "Mon identifiant et mon code secret pour la banque",
    "Meine Krankenakte und mein Passwort",
    "Wie ändere ich das Kennwort meines Kontos?",
    # Health.
    "Mi diagnóstico médico",
    "What medication for my HIV?",
    "I was diagnosed with depression last year and feel worse",
    "My doctor says my blood pressure is too high, what should I eat?",
    "I'm pregnant and worried about my prescriptions",
    "The therapist said my anxiety attacks are getting better",
    "Tengo cáncer y no sé cómo decírselo a mi familia",
    "Me recetaron antidepresivos y tengo dudas",
    "Mon médecin m'a prescrit des antibiotiques",
    "Je suis enceinte et j'ai des nausées",
    "Ich habe eine Depression und suche einen Therapeuten",
    "Der Hausarzt hat Diabetes festgestellt",
    # Finance.
    "Our salaries are confidential",
    "How much tax will I owe on my income this year?",
    "My credit card 4111 1111 1111 1111 was charged twice",
    "What mortgage can I get with my payslip?",
    "Please draft a letter to my landlord about my debts",
    "¿Cuánto es mi sueldo neto después de impuestos?",
    "Mi cuenta bancaria es ES91 2100 0418 4502 0005 1332",
    "Quel est le montant de mon salaire net ?",
    "Mes relevés bancaires montrent des dettes",
    "Wie hoch ist mein Gehalt nach Steuern?",
    "Meine IBAN lautet DE89 3704 0044 0532 0130 00",
    # Identity numbers and contact details.
    "Here is my social security number: 123-45-6789, fill in the form",
    "My passport number is X1234567, is it still valid?",
    "Mi número de DNI es 12345678Z",
    "Voici mon numéro de sécurité sociale",
    "Meine Steuer-ID ist 12 345 678 901",
    "Meine Personalausweisnummer ist L01X00T47",
    "Send the invoice to jane.doe@example.com",
    "Call me back on +49 151 23456789",
    # Said to be private.
    "This is private: who should I talk to?",
    "Esto es confidencial, no lo compartas",
]

PUBLIC = [
    "What is the capital of France?",
    "Write a haiku about autumn leaves",
    "How do I reverse a list in Python?",
    "Explain how photosynthesis works",
    "What's a good recipe for banana bread?",
    "Summarise the plot of Hamlet",
    "Recommend a science fiction novel",
    "How far is the Moon from Earth?",
    "Translate 'good morning' into Italian",
    "What time zone is Tokyo in?",
    "Give me Pinterest board ideas for a garden party",
    "Is 2024 a leap year?",
    "What is 1234 + 5678?",
    "¿Cuál es la capital de Perú?",
    "Escribe un poema sobre el mar",
    "¿Cómo se hace una paella?",
    "Quelle est la hauteur de la tour Eiffel ?",
    "Donne-moi une recette de crêpes",
    "Explique la photosynthèse simplement",
    "Wie hoch ist die Zugspitze?",
    "Schreib ein Gedicht über den Winter",
    "Was ist die Hauptstadt von Kanada?",
]


def context(*, contents: list[types.Content], system_instruction: object = None) -> RoutingContext:
    config = types.GenerateContentConfig(system_instruction=system_instruction)
    return RoutingContext(request=LlmRequest(contents=contents, config=config), models={})


def user(*parts: types.Part) -> types.Content:
    return types.Content(role="user", parts=list(parts))


def asked(text: str) -> RoutingContext:
    return context(contents=[user(types.Part(text=text))])


def test_the_table_is_large_enough():
    assert len(PRIVATE) + len(PUBLIC) >= 40


@pytest.mark.parametrize("text", PRIVATE)
def test_a_private_prompt_stays_on_the_device(text):
    assert privacy_rule(asked(text)) == ON_DEVICE


@pytest.mark.parametrize("text", PUBLIC)
def test_a_public_prompt_is_left_to_the_next_rule(text):
    assert privacy_rule(asked(text)) == ""


@pytest.mark.parametrize("text", ["MY PASSWORD", "my pássword", "MEINE KRANKENAKTE", "mi diagnostico medico"])
def test_case_and_accents_do_not_matter(text):
    assert privacy_rule(asked(text)) == ON_DEVICE


def test_a_private_system_instruction_stays_on_the_device():
    ctx = context(
        contents=[user(types.Part(text="Summarise it."))],
        system_instruction="The user's salary is 85,000 EUR.",
    )

    assert privacy_rule(ctx) == ON_DEVICE


def test_a_private_list_form_system_instruction_stays_on_the_device():
    ctx = context(
        contents=[user(types.Part(text="Summarise it."))],
        system_instruction=["Be brief.", types.Part(text="Patient record: diagnosed with asthma.")],
    )

    assert privacy_rule(ctx) == ON_DEVICE


def test_an_earlier_private_turn_keeps_the_whole_conversation_on_the_device():
    ctx = context(
        contents=[
            user(types.Part(text="My password is hunter2.")),
            types.Content(role="model", parts=[types.Part(text="Noted.")]),
            user(types.Part(text="What is the capital of France?")),
        ]
    )

    assert privacy_rule(ctx) == ON_DEVICE


def test_a_private_function_response_stays_on_the_device():
    ctx = context(
        contents=[
            user(types.Part(text="What did the lookup find?")),
            types.Content(
                role="model",
                parts=[types.Part(function_call=types.FunctionCall(name="lookup_employee", args={"id": 7}))],
            ),
            user(
                types.Part(
                    function_response=types.FunctionResponse(
                        name="lookup_employee", response={"name": "Ada", "salary": 91000}
                    )
                )
            ),
        ]
    )

    assert privacy_rule(ctx) == ON_DEVICE


def test_a_private_function_call_stays_on_the_device():
    call = types.FunctionCall(name="send_form", args={"iban": "GB33BUKB20201555555555"})
    ctx = context(
        contents=[
            user(types.Part(text="Send it.")),
            types.Content(role="model", parts=[types.Part(function_call=call)]),
        ]
    )

    assert privacy_rule(ctx) == ON_DEVICE


def test_media_the_rule_cannot_read_stays_on_the_device():
    photo = types.Part(inline_data=types.Blob(mime_type="image/png", data=b"\x89PNG"))

    assert privacy_rule(context(contents=[user(types.Part(text="What does this say?"), photo)])) == ON_DEVICE


def test_a_public_conversation_with_tools_is_left_to_the_next_rule():
    ctx = context(
        contents=[
            user(types.Part(text="What's the weather in Paris?")),
            types.Content(
                role="model",
                parts=[
                    types.Part(function_call=types.FunctionCall(name="get_weather", args={"city": "Paris"}))
                ],
            ),
            user(
                types.Part(
                    function_response=types.FunctionResponse(
                        name="get_weather", response={"forecast": "sunny"}
                    )
                )
            ),
        ],
        system_instruction="You are a helpful assistant. Answer in one short sentence.",
    )

    assert privacy_rule(ctx) == ""
