"""Text shown in one line (an error, a table cell): whitespace folded, long texts cut at a
word boundary, never inside a word when there is a boundary to cut at."""

ELLIPSIS = "…"


def one_line(text: str) -> str:
    """Newlines and runs of spaces folded into single spaces."""
    return " ".join(text.split())


def clip(text: str, width: int) -> str:
    """`text` on one line, at most `width` characters: cut after the last whole word that
    fits, marked with an ellipsis. Only a single word longer than the width (an id, a URL)
    is cut inside itself, since there is no boundary to cut at."""
    flat = one_line(text)
    if len(flat) <= width:
        return flat
    room = max(1, width - len(ELLIPSIS))
    head = flat[:room + 1]  # one more: a space right after the room means a word ends there
    cut = head.rfind(" ")
    kept = flat[:cut] if cut > 0 else flat[:room]
    return kept.rstrip(" ,;:-") + ELLIPSIS
