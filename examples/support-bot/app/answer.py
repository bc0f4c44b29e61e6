"""The support bot's answer pipeline (application code, not part of the LLM system snapshot)."""


def format_answer(text: str) -> str:
    return text.strip()
