"""Regexes for bounded integers and decimals (outlines-core ignores minimum/maximum).

Integers are written canonically (no leading zeros, no "-0"); bounded numbers as `I` or `I.F`
(no exponent), which JSON parses to a value inside the bounds: the regex is exact, not an
approximation. Knows nothing about schemas or tokenizers: bounds in, regex text out.
"""

from __future__ import annotations

from decimal import Decimal

ANY_FRACTION = r"(?:\.[0-9]+)?"


def _alt(parts: list[str]) -> str | None:
    parts = [p for p in parts if p is not None]
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else "(?:" + "|".join(parts) + ")"


def _digits(lo: int, hi: int) -> str:
    return str(lo) if lo == hi else f"[{lo}-{hi}]"


def _same_length(lo: str, hi: str) -> str:
    """Decimal strings of len(lo) digits between lo and hi (inclusive, same length)."""
    if not lo:
        return ""
    n = len(lo) - 1
    if lo[0] == hi[0]:
        return lo[0] + _same_length(lo[1:], hi[1:])
    if lo[1:] == "0" * n and hi[1:] == "9" * n:
        return _digits(int(lo[0]), int(hi[0])) + ("[0-9]" * n)
    parts = [lo[0] + _group(_same_length(lo[1:], "9" * n))]
    if int(hi[0]) - int(lo[0]) > 1:
        parts.append(_digits(int(lo[0]) + 1, int(hi[0]) - 1) + "[0-9]" * n)
    parts.append(hi[0] + _group(_same_length("0" * n, hi[1:])))
    return "(?:" + "|".join(parts) + ")"


def _group(r: str) -> str:
    return r if len(r) <= 1 or r.startswith("(?:") and r.endswith(")") else f"(?:{r})"


def int_range(lo: int, hi: int | None) -> str | None:
    """Canonical decimal strings of the integers lo <= n <= hi (hi None: unbounded), lo >= 0."""
    assert lo >= 0, "int_range takes non-negative bounds"
    if hi is not None and hi < lo:
        return None
    parts = []
    top = len(str(hi)) if hi is not None else len(str(lo))
    for n in range(len(str(lo)), top + 1):
        a = max(lo, 10 ** (n - 1) if n > 1 else 0)
        b = 10**n - 1 if hi is None else min(hi, 10**n - 1)
        if a <= b:
            parts.append(_same_length(str(a), str(b)))
    if hi is None:
        parts.append(f"[1-9][0-9]{{{top},}}")  # more digits than lo
    return _alt(parts)


def integer_regex(lo: int | None, hi: int | None) -> str | None:
    """Canonical integers in [lo, hi] (either bound may be None); None when the range is empty."""
    if lo is not None and hi is not None and lo > hi:
        return None
    pos = int_range(max(lo, 0) if lo is not None else 0, hi) if hi is None or hi >= 0 else None
    neg = None
    if lo is None or lo < 0:  # -n for n in [max(1, -hi), -lo]
        r = int_range(max(1, -hi) if hi is not None else 1, -lo if lo is not None else None)
        neg = "-" + _group(r) if r is not None else None
    return _alt([neg, pos])


# ---- decimals: a value I.F with the fraction F compared digit by digit ---------------------

def _frac(a: str, sa: bool, b: str | None, sb: bool) -> tuple[str | None, bool]:
    """Fractions F (digit strings) with 0.a <= 0.F <= 0.b (< when sa / sb; b None: no upper
    bound), a and b without trailing zeros. Returns (regex of the non-empty F, empty F ok)."""
    if not a and b is None:
        return ("[0-9]*[1-9][0-9]*" if sa else "[0-9]+"), not sa
    if not a and b == "":
        ok = not sa and not sb
        return ("0+" if ok else None), ok
    empty_ok = (not a and not sa) and (b is None or b != "" or not sb)
    a1, ar = (a[0], a[1:]) if a else ("0", "")
    b1, br = (b[0], b[1:]) if b else ("9", None) if b is None else ("0", "")
    if a1 == b1:
        return _then(a1, _frac(ar, sa, br, sb)), empty_ok
    parts = [_then(a1, _frac(ar, sa, None, False))]
    if int(b1) - int(a1) > 1:
        parts.append(_digits(int(a1) + 1, int(b1) - 1) + "[0-9]*")
    parts.append(_then(b1, _frac("", False, br, sb)) if b is not None else "9[0-9]*")
    return _alt(parts), empty_ok


def _then(digit: str, sub: tuple[str | None, bool]) -> str | None:
    ne, empty = sub
    if ne is None:
        return digit if empty else None
    return digit + (f"(?:{ne})?" if empty else _group(ne))


def _with_int(i: str | None, sub: tuple[str | None, bool]) -> str | None:
    ne, empty = sub
    if i is None or (ne is None and not empty):
        return None
    if ne is None:
        return i
    return _group(i) + (rf"(?:\.{_group(ne)})?" if empty else rf"\.{_group(ne)}")


def _split(x: Decimal) -> tuple[int, str]:
    i = int(x)  # x >= 0: floor
    frac = format(x - i, "f").partition(".")[2].rstrip("0")
    return i, frac


def _nonneg(lo: Decimal, ls: bool, hi: Decimal | None, hs: bool) -> str | None:
    """Numbers y >= 0 written I or I.F with lo <= y <= hi (strict per ls / hs)."""
    li, lf = _split(lo)
    if hi is None:
        return _alt([_with_int(str(li), _frac(lf, ls, None, False)),
                     _with_int(int_range(li + 1, None), ("[0-9]+", True))])
    hi_i, hf = _split(hi)
    if li == hi_i:
        return _with_int(str(li), _frac(lf, ls, hf, hs))
    return _alt([_with_int(str(li), _frac(lf, ls, None, False)),
                 _with_int(int_range(li + 1, hi_i - 1), ("[0-9]+", True)),
                 _with_int(str(hi_i), _frac("", False, hf, hs))])


def number_regex(lo: Decimal | None, lo_strict: bool, hi: Decimal | None,
                 hi_strict: bool) -> str | None:
    """JSON numbers x with lo <= x <= hi (< with the strict flags; None: unbounded), written
    without exponent; None when no number fits."""
    if lo is not None and hi is not None and (lo > hi or lo == hi and (lo_strict or hi_strict)):
        return None
    zero = Decimal(0)
    pos = None
    if hi is None or hi >= zero:
        pos = _nonneg(max(lo, zero) if lo is not None else zero,
                      lo_strict if lo is not None and lo >= zero else False, hi, hi_strict)
    neg = None
    if lo is None or lo < zero:  # x = -y, y in (max(0, -hi), -lo]
        y_lo, y_ls = (-hi, hi_strict) if hi is not None and hi < zero else (zero, True)
        r = _nonneg(y_lo, y_ls, -lo if lo is not None else None, lo_strict)
        neg = "-" + _group(r) if r is not None else None
    return _alt([neg, pos])
