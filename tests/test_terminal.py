"""tracewatch.terminal: text from events is shown, never obeyed, by a terminal."""

from __future__ import annotations

import pytest

from tracewatch.terminal import UNSAFE, printable

HOSTILE = [
    ("\x1b]0;pwned\x07", "\\x1b]0;pwned\\x07"),  # OSC: sets the window title
    ("\x1b[2J\x1b[H", "\\x1b[2J\\x1b[H"),  # clears the screen
    ("a\x9b31mred", "a\\x9b31mred"),  # C1 CSI: one byte, no ESC
    ("\u202etxt.exe", "\\u202etxt.exe"),  # right-to-left override
    ("x\u2066y\u2069", "x\\u2066y\\u2069"),  # bidi isolates
    ("del\x7f", "del\\x7f"),
    ("line\nbreak\r\ttab\x00", "line\\nbreak\\r\\ttab\\x00"),
    ("zero\u200bwidth\ufeff", "zero\\u200bwidth\\ufeff"),
]


@pytest.mark.parametrize(("text", "shown"), HOSTILE)
def test_control_characters_are_escaped(text: str, shown: str) -> None:
    assert printable(text) == shown
    assert not UNSAFE.search(printable(text))


@pytest.mark.parametrize("text", ["support/chat", "refund/primary", "café → 東京 ✓", "a\\x1b"])
def test_ordinary_text_is_unchanged(text: str) -> None:
    assert printable(text) == text


def test_every_c0_c1_and_del_character_is_caught() -> None:
    for code in [*range(0x20), 0x7F, *range(0x80, 0xA0)]:
        assert UNSAFE.search(chr(code)), hex(code)
