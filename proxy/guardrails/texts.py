"""The text a guardrail is asked about, and its replacements put back: pure, no I/O.

A guardrail judges what people and models say, so it is asked about the messages' text (the
system prompt included): string contents and the `text` of text parts, in order. Tool schemas,
ids, URLs and binary parts are not what moderation reads, and are left as they are. A replacement
comes back as a list of the same length; the request (or answer) is rebuilt along the changed
paths only, so the parsed original stays intact.
"""

from __future__ import annotations

from typing import Any

from proxy.providers.base import ChatChunk, ChatRequest, ChatResponse

# Where one text lives: (message index, part index or None for a string content).
Place = tuple[int, int | None]


def request_texts(request: ChatRequest) -> tuple[list[str], list[Place]]:
    texts: list[str] = []
    places: list[Place] = []
    messages = request.get("messages")
    if not isinstance(messages, list):
        return texts, places
    for m, message in enumerate(messages):
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            texts.append(content)
            places.append((m, None))
        elif isinstance(content, list):
            for p, part in enumerate(content):
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    texts.append(part["text"])
                    places.append((m, p))
    return texts, places


def replace_request_texts(request: ChatRequest, places: list[Place], texts: list[str]) -> ChatRequest:
    """A copy of `request` with the text at each place replaced (copied only where changed)."""
    messages = list(request["messages"])
    for (m, p), text in zip(places, texts, strict=True):
        message = dict(messages[m])
        if p is None:
            message["content"] = text
        else:
            content = message["content"] = list(message["content"])
            content[p] = {**content[p], "text": text}
        messages[m] = message
    return {**request, "messages": messages}


def response_texts(response: ChatResponse) -> list[str]:
    """The answer's text: each choice's message content (a refusal is the provider's own words)."""
    texts: list[str] = []
    for choice in _choices(response):
        message = choice.get("message")
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            texts.append(content)
    return texts


def replace_response_texts(response: ChatResponse, texts: list[str]) -> ChatResponse:
    choices: list[Any] = []
    replacements = iter(texts)
    for choice in _choices(response):
        message = choice.get("message")
        if isinstance(message, dict) and isinstance(message.get("content"), str):
            choice = {**choice, "message": {**message, "content": next(replacements)}}
        choices.append(choice)
    return {**response, "choices": choices}


def chunk_text(chunk: ChatChunk) -> str:
    """The answer text one streamed chunk adds (every choice's delta content)."""
    choices = chunk.get("choices")
    if not choices:
        return ""
    if len(choices) == 1:
        delta = choices[0].get("delta") or {}
        content = delta.get("content")
        return content if isinstance(content, str) else ""
    return "".join(
        content for choice in choices if isinstance(content := (choice.get("delta") or {}).get("content"), str)
    )


def with_chunk_text(chunk: ChatChunk, text: str) -> ChatChunk:
    """`chunk` with its content set to `text` (on its first choice; a guardrail's replacement)."""
    choices = [dict(choice) for choice in chunk.get("choices") or ()]
    for index, choice in enumerate(choices):
        delta = choice.get("delta") or {}
        choice["delta"] = {**delta, "content": text if index == 0 else ""}
    return {**chunk, "choices": choices}


def _choices(response: ChatResponse) -> list[dict[str, Any]]:
    choices = response.get("choices")
    return [c for c in choices if isinstance(c, dict)] if isinstance(choices, list) else []
