"""The hybrid demo's table of phrasings: private ones must stay on the device, public ones may leave.

Written from the categories the README promises to keep local (credentials,
health, finance, identity numbers) in English, Spanish, French and German,
before the privacy rule was; they are not its keyword list. Read by
``tests/test_hybrid_privacy.py`` and ``benchmarks/privacy_classifier.py``.
"""

from __future__ import annotations

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

PARAPHRASES = [
    "The thing I log in with stopped working, can you make me a new one?",
    "My boss shouted at me again today and I cried in the bathroom",
    "I keep waking up at 3am with my heart racing and I can't breathe",
    "The bailiff came to our flat because we owe the landlord three months",
    "My husband doesn't know I'm seeing someone about my drinking",
    "Here are the twelve words that unlock my crypto wallet: apple river ...",
]
"""Private matters in plain words, which the keyword rule is documented not to catch (not in its tests)."""
