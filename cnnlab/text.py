"""Names from data, made safe to print: :func:`safe` escapes control characters.

Class names (folder names, or someone else's checkpoint), file names and values from a sweep's
database are data, not text for the terminal: a name holding ``ESC ] 0 ; ... BEL`` would set the
window's title, one holding ``ESC [ 2 J`` and a newline would clear the screen and forge a line.
Everything printed that comes from data goes through :func:`safe` first.
"""

from __future__ import annotations

import unicodedata


def safe(name: object) -> str:
    """``str(name)`` with every control or format character (C0, DEL, C1, bidi overrides, line and
    paragraph separators) written as a Python escape (``\\x1b``, ``\\n``, ``\\u202e``); other text,
    accents and scripts included, is unchanged."""
    text = str(name)
    if text.isprintable():
        return text
    return "".join(_escape(c) if _is_control(c) else c for c in text)


def _is_control(c: str) -> bool:
    return unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp")


def _escape(c: str) -> str:
    code = ord(c)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def safe_lines(text: object) -> str:
    """:func:`safe` for each line of a multi-line text (tables, reports): the line breaks are kept."""
    return "\n".join(safe(line) for line in str(text).split("\n"))


def answer_text(answer: dict) -> str:
    """An answer as ``predict`` and ``explain`` print it: ``7 (98.5%)``, or with the "none of these" rule
    saying so, ``unknown (looks like none of the classes; closest 7 (41.0%))``; names made :func:`safe`."""
    text = f"{safe(answer['label'])} ({100 * answer['probability']:.1f}%)"
    return f"unknown (looks like none of the classes; closest {text})" if answer.get("unknown") else text
