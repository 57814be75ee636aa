# ruff: noqa: RUF001 - the samples are text in other scripts.
"""The default token estimate against the tokenizer of the default on-device model.

``InputSizeStrategy`` routes by ``estimate_tokens`` unless given a real
counter, so the estimate must not undercount what the device reads: never by
more than 10% for English, CJK, Cyrillic or emoji text. These samples are not
the ones ``benchmarks/token_estimate.py`` measures for the docs.
"""

from __future__ import annotations

import pytest

pytest.importorskip("llama_cpp", reason="install the 'ondevice' extra (nox does)")

from routed_llm.ondevice import default_model_path
from routed_llm.strategies import estimate_tokens

ENGLISH = {
    "chat": (
        "Hi! Can you help me write a short birthday message for my grandmother? She's turning 90 next "
        "week and loves gardening, crossword puzzles and her two cats."
    ),
    "email": (
        "Dear team,\n\nThank you all for your hard work this quarter. As discussed in Monday's meeting, we "
        "will move the product launch to the first week of March so that QA has enough time to finish "
        "regression testing. Please update your tickets accordingly and let me know by Thursday if "
        "anything blocks you.\n\nBest regards,\nMaria"
    ),
    "code": (
        'def fibonacci(n: int) -> list[int]:\n    """Returns the first n Fibonacci numbers."""\n'
        "    result = [0, 1]\n    while len(result) < n:\n        result.append(result[-1] + result[-2])\n"
        "    return result[:n]\n\nprint(fibonacci(10))  # [0, 1, 1, 2, 3, 5, 8, 13, 21, 34]\n"
    ),
}

OTHER_SCRIPTS = {
    "japanese": "すみません、明日の会議の資料を今日中に送っていただけますか？よろしくお願いいたします。",
    "kana": "きょうは とても いい てんきですね。こうえんで さんぽを しましょう。カタカナ、ラーメン。",
    "chinese": (
        "据报道，今年夏天全国多地出现高温天气，气象部门提醒市民注意防暑降温，尽量避免在中午时段进行户外活动。"
    ),
    "korean": "우리 동네에는 작은 도서관이 하나 있습니다. 주말이 되면 아이들과 부모님들이 함께 옵니다.",
    "russian": (
        "Привет! Подскажи, пожалуйста, как приготовить борщ без мяса? У меня есть свёкла, капуста, "
        "морковь и картошка."
    ),
    "russian technical": (
        "Для установки пакета выполните команду pip install requests, затем импортируйте модуль."
    ),
    "emoji": "🐶🐱🐭🐹🐰🦊🐻🐼🐨🐯🦁🐮🐷🐸🐵🙈🙉🙊🐔🐧🐦🐤🦆🦅🦉🦇🐺🐗🐴🦄🐝🐛🦋🐌🐞🐜🪲🪳🦟🦗",
    "emoji in text": "Happy birthday!!! 🎂🎉🥳 Love you lots ❤️❤️❤️ see you soon 😘👋 👨‍👩‍👧‍👦",
    "mixed": "Let's meet at 東京駅 at 10:30 🚄 — бери паспорт! Merci 😊",
}


@pytest.fixture(scope="module")
def smollm2_tokens():
    from llama_cpp import Llama

    tokenizer = Llama(model_path=str(default_model_path()), vocab_only=True, verbose=False)
    return lambda text: len(tokenizer.tokenize(text.encode(), add_bos=False, special=False))


@pytest.mark.parametrize("text", [*ENGLISH.values(), *OTHER_SCRIPTS.values()], ids=[*ENGLISH, *OTHER_SCRIPTS])
def test_the_estimate_never_undercounts_by_more_than_ten_percent(text, smollm2_tokens):
    assert estimate_tokens(text) >= 0.9 * smollm2_tokens(text)


@pytest.mark.parametrize("text", ENGLISH.values(), ids=ENGLISH)
def test_the_estimate_of_english_is_at_most_half_again_the_real_count(text, smollm2_tokens):
    assert estimate_tokens(text) <= 1.5 * smollm2_tokens(text)
