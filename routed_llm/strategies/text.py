"""What a model reads of a request as one text, and an estimate of its tokens without a tokenizer."""

from __future__ import annotations

import math
import re

from google.adk.models.llm_request import LlmRequest

from routed_llm._text import message_texts


def request_text(request: LlmRequest, *, system_instruction: bool = True, thoughts: bool = False) -> str:
    """Everything a model reads of ``request``, as one text.

    The system instruction (a string, a ``Part``, a ``Content`` or a list of
    them), then the parts of every turn: text as it is, function calls and
    function responses as the JSON a model is shown, code and code results as
    their text. Media have no text and are left out. The messages are joined
    by newlines. ``InputSizeStrategy(max_chars=...)`` measures this text, and
    :func:`estimate_tokens` estimates its tokens.

    Args:
        request: The request.
        system_instruction: Whether to include the system instruction.
        thoughts: Whether to include thought parts (a model does not read its
            own past thoughts; a privacy rule may want to).

    Returns:
        The text, "" for a request with none.
    """
    return "\n".join(message_texts(request, system_instruction=system_instruction, thoughts=thoughts))


TOKENS_PER_MESSAGE = 4
"""What :func:`estimate_tokens` adds for each message: a chat template's role markers."""


def estimate_tokens(source: LlmRequest | str) -> int:
    """Estimates, without a tokenizer, how many tokens a model reads; errs high.

    The default counter of :class:`InputSizeStrategy`. For a request it counts
    what :func:`request_text` reads (the system instruction, every turn,
    function calls and responses), plus :data:`TOKENS_PER_MESSAGE` for each
    message; for a string, that string alone.

    Costs are per script, measured against SmolLM2's tokenizer (49,152 byte
    pairs, trained mostly on English, so it splits other scripts finely; a
    larger multilingual tokenizer such as Gemini's needs fewer tokens, so the
    estimate stays on the safe side). ``benchmarks/token_estimate.py``
    measures it, and ``docs/strategies.md`` shows the table:

    * Latin-script words: at least one token each; 0.25 tokens a letter in
      text that reads as English (by its share of common English words), up
      to 0.45 in other languages, plus 0.5 for each accented letter;
    * digits, punctuation and symbols of ASCII: one token each; a line
      break: one; a run of several spaces: one;
    * Greek, Cyrillic, Armenian, Hebrew and Arabic letters: 1.1 each;
    * Chinese characters and kanji: 2.2 each; kana, CJK punctuation and
      full-width forms: 2.0 each;
    * emoji: 3 each; anything else: its UTF-8 length in bytes (a byte-level
      tokenizer's worst case), e.g. 3 for a Hangul syllable.

    Rare Chinese characters cost a byte-level tokenizer up to 3 tokens and
    are undercounted; pass a real counter (``LlamaCppLlm.count_tokens``, say)
    to :class:`InputSizeStrategy` where precision matters.

    Args:
        source: A request, or a text.

    Returns:
        The estimated number of tokens, each message's rounded up.
    """
    if isinstance(source, str):
        return math.ceil(_text_tokens(source))
    return sum(TOKENS_PER_MESSAGE + math.ceil(_text_tokens(text)) for text in message_texts(source))


# Common English words: their share tells English (0.2 tokens a letter for an
# English tokenizer) from other Latin-script languages (up to 0.45).
_ENGLISH_WORDS = frozenset(
    """the of and to a in is it that for on with as was at by be this are or from an not but have has had
    he she they we you i his her their its our your my me him them us there here what which who when where
    how why all any some no one two can could will would should may might must do does did been were if
    then than so also just about into over after before up out more most other such only very like these
    those because while""".split()  # noqa: SIM905 - a word list reads best as text.
)
_LATIN_WORD = re.compile(r"[A-Za-z\u00C0-\u024F]+")
_WHITESPACE = re.compile(r"\s+")


def _text_tokens(text: str) -> float:
    words = _LATIN_WORD.findall(text)
    english = sum(word.lower() in _ENGLISH_WORDS for word in words) / len(words) if words else 0.0
    per_letter = 0.45 - 0.2 * min(1.0, max(0.0, (english - 0.05) / 0.2))
    tokens = sum(
        max(1.0, per_letter * len(word)) + 0.5 * sum(not c.isascii() for c in word) for word in words
    )
    for run in _WHITESPACE.findall(text):
        tokens += run.count("\n") or int(len(run) > 1)
    return tokens + sum(_char_tokens(char) for char in _LATIN_WORD.sub("", text) if not char.isspace())


def _char_tokens(char: str) -> float:
    code = ord(char)
    if code < 0x80:
        return 1.0
    if 0x0370 <= code <= 0x07FF:  # Greek, Cyrillic, Armenian, Hebrew, Arabic...
        return 1.1
    if 0x3400 <= code <= 0x4DBF or 0x4E00 <= code <= 0x9FFF or 0xF900 <= code <= 0xFAFF:
        return 2.2  # CJK ideographs.
    if 0x3000 <= code <= 0x30FF or 0xFF00 <= code <= 0xFFEF:
        return 2.0  # CJK punctuation, kana, full-width forms.
    if code == 0xFE0F:  # Emoji presentation selector.
        return 1.0
    if code == 0x200D:  # Zero-width joiner, inside emoji sequences.
        return 2.0
    if 0x1F000 <= code <= 0x1FAFF:  # Emoji.
        return 3.0
    return float(len(char.encode()))
