"""What a model reads of a request, as text: shared by the strategies and the on-device model."""

from __future__ import annotations

import json
from typing import Any

from google.adk.models.llm_request import LlmRequest
from google.adk.models.llm_response import LlmResponse
from google.genai import types


def instruction_text(instruction: object) -> str:
    """The text of a system instruction in any shape genai accepts ("" for none).

    A string, a ``Part``, a ``Content``, or a list of any of them; the pieces
    are joined by newlines.
    """
    if instruction is None:
        return ""
    if isinstance(instruction, str):
        return instruction
    if isinstance(instruction, types.Part):
        return instruction.text or ""
    if isinstance(instruction, types.Content):
        return "\n".join(part.text for part in instruction.parts or () if part.text)
    if isinstance(instruction, (list, tuple)):
        return "\n".join(filter(None, (instruction_text(item) for item in instruction)))
    return ""


def part_text(part: types.Part, *, thoughts: bool = False) -> str | None:
    """The text a model reads of one part, or None for media and (unless asked) thoughts.

    Function calls and responses read as the JSON a model is shown; code and
    code results as their text.
    """
    if part.thought and not thoughts:
        return None
    if part.text is not None:
        return part.text
    if part.function_call is not None:
        return _json({"name": part.function_call.name, "args": part.function_call.args or {}})
    if part.function_response is not None:
        response = part.function_response
        return _json({"name": response.name, "response": response.response or {}})
    if part.executable_code is not None:
        return part.executable_code.code or ""
    if part.code_execution_result is not None:
        return part.code_execution_result.output or ""
    return None


def message_texts(
    request: LlmRequest, *, system_instruction: bool = True, thoughts: bool = False
) -> list[str]:
    """The text of each message the model reads: the system instruction, then every turn.

    Args:
        request: The request.
        system_instruction: Whether to include the system instruction.
        thoughts: Whether to include thought parts.

    Returns:
        One string per message (the system instruction first, when present and
        asked for), each turn's parts joined by newlines.
    """
    texts = []
    if system_instruction and request.config is not None:
        instruction = instruction_text(request.config.system_instruction)
        if instruction:
            texts.append(instruction)
    for content in request.contents:
        pieces = [part_text(part, thoughts=thoughts) for part in content.parts or ()]
        texts.append("\n".join(piece for piece in pieces if piece))
    return texts


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


def shows_anything(response: LlmResponse) -> bool:
    """Whether ``response`` carries anything to output: an error, or a part with text, a call, media..."""
    if response.error_code is not None:
        return True
    return any(
        part.text
        or part.function_call is not None  # The common cases first: this runs on every call.
        or part.model_dump(exclude_none=True, exclude=_EMPTY_PART_FIELDS)
        for part in (response.content.parts or () if response.content else ())
    )


# The fields of a part that carry nothing on their own.
_EMPTY_PART_FIELDS = {"text", "thought", "thought_signature", "part_metadata"}
