"""Printed tables aligned by display width: a Chinese character takes two terminal columns, not one."""
from __future__ import annotations

from typing import Iterable, Sequence

from wcwidth import wcswidth, wcwidth

#: Opening brackets and the closing ones that end them (ASCII and full-width).
_PAIRS = {"(": ")", "（": "）", "[": "]", "【": "】", "《": "》", "「": "」"}


def display_width(text: object) -> int:
    """Terminal columns `text` takes (East Asian wide characters count 2; unprintable ones 0)."""
    s = str(text)
    n = wcswidth(s)
    return n if n >= 0 else sum(max(0, wcwidth(ch)) for ch in s)


def clip(text: object, width: int) -> str:
    """`text` cut to at most `width` columns with "…"; a cut never leaves a bracket open: it moves before it."""
    s = str(text)
    if display_width(s) <= width:
        return s
    out, used = [], 0
    for ch in s:
        w = max(0, wcwidth(ch))
        if used + w > width - 1:
            break
        out.append(ch)
        used += w
    cut = "".join(out)
    open_at = _unclosed_bracket(cut)
    if open_at is not None and open_at > 0:
        cut = cut[:open_at]
    return cut.rstrip() + "…"


def _unclosed_bracket(s: str) -> int | None:
    """Index of the first bracket in `s` left open at its end, else None."""
    stack: list[tuple[str, int]] = []
    for i, ch in enumerate(s):
        if ch in _PAIRS:
            stack.append((_PAIRS[ch], i))
        elif stack and ch == stack[-1][0]:
            stack.pop()
    return stack[0][1] if stack else None


def pad(text: object, width: int, align: str = "<") -> str:
    """`text` padded with spaces to `width` display columns (align "<" left, ">" right)."""
    s = str(text)
    fill = " " * max(0, width - display_width(s))
    return s + fill if align == "<" else fill + s


def format_table(headers: Sequence[str], rows: Iterable[Sequence[object]], *, align: str | None = None,
                 indent: str = "  ", max_width: int | None = 48, gap: str = "  ") -> str:
    """Rows under headers, each column as wide as its widest cell in display columns (cells over
    `max_width` columns are clipped by `clip`; None: never). `align`: one "<" or ">" per column (default:
    text left, numbers right)."""
    rows = [[c if max_width is None else clip(c, max_width) for c in map(_cell, r)] for r in rows]
    raw = [list(r) for r in rows]
    n = len(headers)
    if align is None:
        align = "".join(">" if raw and all(_numeric(r[i]) for r in raw if r[i] != "") and
                        any(r[i] != "" for r in raw) else "<" for i in range(n))
    widths = [max([display_width(headers[i])] + [display_width(r[i]) for r in rows]) for i in range(n)]
    lines = [indent + gap.join(pad(headers[i], widths[i], align[i]) for i in range(n)).rstrip()]
    for r in rows:
        lines.append(indent + gap.join(pad(r[i], widths[i], align[i]) for i in range(n)).rstrip())
    return "\n".join(lines)


def _cell(value: object) -> str:
    return "" if value is None else str(value)


def _numeric(s: str) -> bool:
    t = s.strip().rstrip("%").replace(",", "").replace("/", "").replace(" ", "")
    if t in ("", "—", "-", "nan"):
        return True
    try:
        float(t)
        return True
    except ValueError:
        return False
