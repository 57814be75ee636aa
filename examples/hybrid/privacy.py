"""The demo's privacy rule: prompts that look private stay on the device.

A keyword rule, so it errs towards the device: it reads every text the cloud
would receive (the system instruction, every turn, function calls and
responses, thoughts), case- and accent-blind, and matches word stems, so
plurals and inflections count ("passwords", "Passwörter", "diagnóstico").
It covers credentials, health, finance and identity numbers in English,
Spanish, French and German, plus number shapes (card numbers, IBANs, social
security numbers, phone numbers, e-mail addresses) and anything the user
calls private or confidential. A part the rule cannot read (an image, a file)
keeps the request on the device too.

What it cannot catch: other languages and scripts, misspellings and
paraphrases ("the thing I log in with"), private facts in plain words ("my
boss shouted at me"), and context (a public question about a disease looks
private to it). Put a stronger detector in front for those: see
docs/on-device.md.
"""

from __future__ import annotations

import re
import unicodedata

from google.adk.models.llm_request import LlmRequest

from routed_llm.strategies import ON_DEVICE, RoutingContext, request_text

# Stems matched at the start of a word, after case folding and accent removal,
# so plurals and inflections match too: "passw" matches password, passwords,
# Passwort, Passwörter.
STEMS = {
    "said to be private": "private privat prive privad confiden vertraulich geheim",
    "credentials": "passw passcode passphrase apikey kennwort contrasen credential login logon "
    "identifiant zugangsdat",
    "health": "diagnos medic medik medecin prescri recetar therap terap psychi psycholog psicolog "
    "psiquiatr depres antidepre anxi ansiedad cancer krebs tumor tumeur diabet pregnan embaraz "
    "enceinte grossesse schwanger doctor docteur hospital hopital klinik clinic symptom sintoma "
    "illness disease enfermedad maladie surgery chirurg cirug allerg asthm asma insulin blood sangu "
    "blut suicid addict adiccion rehab abortion aborto avortement abtreibung",
    "finance": "bank banq banc salar salair sueldo payslip paycheck paystub income ingresos einkommen "
    "gehalt lohnabrechnung lohnsteuer impot impuest steuer debt deuda dette schulden loan prestamo "
    "kredit credit mortgage hipoteca hypothek hypotheque savings ahorro epargne erspar overdraft "
    "invoice factura facture rechnung",
    "identity": "passport pasaporte passeport reisepass ausweis personalausweis identit identid "
    "fuhrerschein geburtsdatum",
}

# Whole words only: short words that would match too much as stems ("pin" in "pink").
WORDS = (
    "pin pins tax taxes taxed 2fa otp hiv vih sida ssn dni nif nir nss curp iban ibans lohn nomina "
    "nominas pret prets revenu revenus secret secrets secreto secretos secreta secretas secrete"
)

# Several words, any punctuation between them; the last word's stem may inflect.
PHRASES = (
    "mot de passe", "mots de passe", "api key", "access token", "secret key", "private key",
    "recovery code", "security code", "verification code", "two factor", "code pin", "pin code",
    "code secret", "social security", "securite sociale", "seguridad social", "sozialversicherung",
    "account number", "numero de cuenta", "numero de compte", "date of birth", "fecha de nacimiento",
    "date de naissance", "driver s licen", "drivers licen", "driving licen", "permis de conduire",
    "licencia de conducir", "carnet de conducir", "id card", "national id", "tax id", "net worth",
    "receta medica",
)  # fmt: skip

# Anywhere in a word, for German compounds: "Hausarzt", "Krankenakte", "Einmalpasswort".
INFIXES = "arzt krank konto passwort kennwort medikament therapeut diagnos"

NUMBER_SHAPES = (
    r"(?:\d[ .-]?){9,}\d",  # 10+ digits: card, account, phone or identity numbers.
    r"\b\d{3}-\d{2}-\d{4}\b",  # A US social security number.
    r"\b[a-z]{2}\d{2} ?[a-z0-9]{4} ?\d{4}",  # The start of an IBAN.
    r"\b(?=[a-z0-9]*[a-z])(?=[a-z0-9]*\d{5})[a-z0-9]{6,}\b",  # Letters and 5+ digits: passport, DNI.
    r"\+\d[\d ()-]{6,}\d",  # An international phone number.
    r"[\w.+-]+@[\w-]+\.[\w.-]+",  # An e-mail address.
)


def _pattern() -> re.Pattern[str]:
    stems = "|".join(stem for group in STEMS.values() for stem in group.split())
    words = "|".join(WORDS.split())
    phrases = "|".join(phrase.replace(" ", r"\W+") for phrase in PHRASES)
    infixes = "|".join(INFIXES.split())
    shapes = "|".join(NUMBER_SHAPES)
    return re.compile(rf"\b(?:{stems})|\b(?:{words})\b|\b(?:{phrases})|{infixes}|{shapes}")


PRIVATE = _pattern()


def normalise(text: str) -> str:
    """Case-folds ``text`` and strips accents: "Passwörter" -> "passworter"."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(char for char in decomposed if not unicodedata.combining(char))


def looks_private(text: str) -> bool:
    """Whether ``text`` mentions a private matter, by the keyword rule."""
    return PRIVATE.search(normalise(text)) is not None


def privacy_rule(ctx: RoutingContext) -> str:
    """Keeps private requests on the device ("" = no decision, the next rule decides)."""
    if _holds_media(ctx.request) or looks_private(request_text(ctx.request, thoughts=True)):
        ctx.annotate(reason="private prompt stays on the device")
        return ON_DEVICE
    return ""


def _holds_media(request: LlmRequest) -> bool:
    """Whether ``request`` holds media or a file (a tool's result included): no text rule can read them."""
    for content in request.contents:
        for part in content.parts or ():
            response = part.function_response
            media = [part, *(response.parts or ())] if response is not None else [part]
            if any(item.inline_data is not None or item.file_data is not None for item in media):
                return True
    return False
