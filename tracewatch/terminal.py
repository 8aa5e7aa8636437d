"""Text from events made safe to print on a terminal: shown, never obeyed.

Route, tool, model and scope names come from whoever produced the events. A name
holding ``ESC ] 0 ; … BEL`` retitles the window, ``ESC [ 2 J`` clears the screen,
the one-byte C1 ``CSI`` (0x9b) does the same without an ESC on terminals that take
8-bit controls, and a right-to-left override (U+202E) makes ``exe.txt`` read as
``txt.exe``. ``printable`` spells each such character as a Python-style escape
(``\\x1b``, ``\\u202e``), so the text stays readable and nothing reaches the
terminal as a control. It is for table cells and one-line labels; ``--json``
output needs none of this (JSON escapes with ``ensure_ascii``). Pure: no I/O.
"""

from __future__ import annotations

import re

__all__ = ["UNSAFE", "printable"]

#: C0 controls (newline and tab too: a cell is one line), DEL, C1 controls, the
#: bidirectional controls (marks, embeddings, overrides, isolates), zero-width
#: characters, line/paragraph separators and the byte-order mark
UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(text: str) -> str:
    """``text`` with every character of ``UNSAFE`` written as an escape; else unchanged."""
    if UNSAFE.search(text) is None:  # the usual case: no copy
        return text
    return UNSAFE.sub(_escape, text)


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    return _NAMED.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
