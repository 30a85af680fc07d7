"""Words the CLI shows (one-line texts come from shared/text.py)."""


def plural(count: int, word: str, many: str | None = None) -> str:
    """`1 result`, `2 results`, `1,204 results`."""
    return f"{count:,} {word if count == 1 else (many or word + 's')}"
