"""How messages word things: counted nouns ("1 intervention"), errors on one line."""

from __future__ import annotations


def plural(count: int | float, noun: str, nouns: str | None = None) -> str:
    """``count`` and ``noun``, the noun in the plural unless the count is one."""
    if count == 1:
        return f"1 {noun}"
    if nouns is None:
        nouns = noun + ("es" if noun.endswith(("s", "sh", "ch", "x")) else "s")
    return f"{int(count):,} {nouns}" if count == int(count) else f"{count:,} {nouns}"


def one_line(exc: BaseException) -> str:
    """An exception as ``Type: message`` on one line (the first line of its message)."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def last_line(text: str | None) -> str | None:
    """The last non-blank line: of a reported crash, the exception itself, not the traceback."""
    if not text:
        return text
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else None
