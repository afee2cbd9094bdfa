"""Regexes over the JSON *text* of scalar values, for grammar terminals.

Every regex here is written in the dialect shared by Python `re` (lark) and the Rust `regex` crate
(llguidance): `(?:...)` groups only, no look-around, no backreferences, no `\\d`/`\\w`/`\\s`, explicit ASCII
classes, `/` written as `\\/`, and no escape above U+FFFF. Each regex is meant for full matching against the
text `json.dumps(value, ensure_ascii=False)` writes: strings with their quotes and JSON escapes, numbers in
Python's canonical spelling.

- `int_range`: exact, digit by digit (the classic range-to-regex construction).
- `number_range`: exact on JSON's decimal forms and on exponent forms with one leading digit (what `json.dumps`
  writes); a general exponent form cannot be bounded by a regular language.
- `string_regex` / `any_string_regex`: length-bounded JSON strings.
- `format_regex`: JSON-string regexes for common `format` values.
- `pattern_regex`: an ECMA-262 `pattern` (search semantics) re-emitted from its parse tree as a regex over the
  JSON text of the string.
"""
from __future__ import annotations

import math
import re
import unicodedata
import warnings
from decimal import Context, Decimal, localcontext
from functools import lru_cache

try:  # Python >= 3.11
    from re import _constants as _sre
    from re import _parser as _sre_parse
except ImportError:  # pragma: no cover - Python 3.10
    import sre_constants as _sre  # type: ignore[no-redef]
    import sre_parse as _sre_parse  # type: ignore[no-redef]

__all__ = ["int_range", "number_range", "string_regex", "any_string_regex", "format_regex", "pattern_regex",
           "UnsupportedPattern"]


class UnsupportedPattern(ValueError):
    """A `pattern` this module cannot translate (look-around, backreferences, bad syntax, ...)."""


# ---------------------------------------------------------------------------------------------- helpers
def _alt(parts: list[str]) -> str:
    """Alternation that can be concatenated safely (grouped unless it is a single plain sequence)."""
    parts = list(dict.fromkeys(parts))
    if len(parts) == 1 and not _has_top_bar(parts[0]):
        return parts[0]
    return "(?:" + "|".join(parts) + ")"


def _has_top_bar(rx: str) -> bool:
    """Whether `rx` has a `|` outside every group and class."""
    depth, i, in_class = 0, 0, False
    while i < len(rx):
        c = rx[i]
        if c == "\\":
            i += 2
            continue
        if in_class:
            in_class = c != "]"
        elif c == "[":
            in_class = True
            if rx.startswith("^", i + 1):
                i += 1
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        elif c == "|" and depth == 0:
            return True
        i += 1
    return False


def _is_atom(rx: str) -> bool:
    """True when `rx` is a single regex atom (one char, one escape, one class, one group)."""
    if len(rx) == 1 and rx not in ".^$*+?{}[]|()\\/":
        return True
    if len(rx) == 2 and rx[0] == "\\" or re.fullmatch(r"\\x[0-9a-f]{2}|\\u[0-9a-f]{4}", rx):
        return True
    if rx.startswith("[") or rx.startswith("(?:"):
        depth, i = 0, 0
        while i < len(rx):  # the opening bracket must close at the very end
            c = rx[i]
            if c == "\\":
                i += 2
                continue
            if rx[0] == "[":
                if c == "]" and i > 1:
                    return i == len(rx) - 1
            else:
                if c == "[":  # skip a class inside the group
                    j = i + 1
                    while j < len(rx) and not (rx[j] == "]" and j > i + 1):
                        j += 2 if rx[j] == "\\" else 1
                    i = j + 1
                    continue
                if c == "(":
                    depth += 1
                elif c == ")":
                    depth -= 1
                    if depth == 0:
                        return i == len(rx) - 1
            i += 1
    return False


def _rep(atom: str, lo: int, hi: int | None) -> str:
    """`atom` repeated lo..hi times (hi None = unbounded), using the short quantifiers where they fit."""
    if hi == 0 or not atom:
        return ""
    if lo == hi == 1:
        return atom
    if not _is_atom(atom):
        atom = f"(?:{atom})"
    if hi is None:
        return atom + ("*" if lo == 0 else "+" if lo == 1 else f"{{{lo},}}")
    if lo == hi:
        return f"{atom}{{{lo}}}"
    if (lo, hi) == (0, 1):
        return atom + "?"
    return f"{atom}{{{lo},{hi}}}"


# ---------------------------------------------------------------------------------------------- integers
def _digits(lo: int, hi: int) -> str:
    return str(lo) if lo == hi else "[0-9]" if (lo, hi) == (0, 9) else f"[{lo}-{hi}]"


def _digit_set(ds: list[int]) -> str:
    if ds == list(range(ds[0], ds[-1] + 1)):
        return _digits(ds[0], ds[-1])
    return "[" + "".join(map(str, ds)) + "]"


def _same_length(x: str, y: str) -> list[str]:
    """Alternatives matching every digit string of len(x) between x and y (x <= y, same length)."""
    if x == y:
        return [x]
    i = 0
    while x[i] == y[i]:
        i += 1
    if i:
        return [x[:i] + _alt(_same_length(x[i:], y[i:]))]
    rest = len(x) - 1
    if rest == 0:
        return [_digits(int(x), int(y))]
    parts, tail = [], None
    start, end = int(x[0]), int(y[0])
    if x[1:] != "0" * rest:  # lower edge digit needs its own tail
        parts.append(x[0] + _alt(_same_length(x[1:], "9" * rest)))
        start += 1
    if y[1:] != "9" * rest:
        tail = y[0] + _alt(_same_length("0" * rest, y[1:]))
        end -= 1
    if start <= end:
        parts.append("[0-9]" + f"{{{rest + 1}}}" if (start, end) == (0, 9)
                     else _digits(start, end) + _rep("[0-9]", rest, rest))
    if tail:
        parts.append(tail)
    return parts


def _natural_range(a: int, b: int | None) -> list[str]:
    """Alternatives for the canonical decimal text of every integer in [a, b] (a >= 0; b None = unbounded)."""
    parts: list[str] = []
    if a == 0:
        parts.append("0")
        a = 1
    if b is not None and a > b:
        return parts
    la = len(str(a))
    lb = None if b is None else len(str(b))
    full_from = None  # first digit count whose whole decade is covered
    for length in range(la, (lb if lb is not None else la) + 1):
        lo_l, hi_l = max(a, 10 ** (length - 1)), 10 ** length - 1 if b is None else min(b, 10 ** length - 1)
        if lo_l == 10 ** (length - 1) and hi_l == 10 ** length - 1:
            full_from = length if full_from is None else full_from
            continue
        if full_from is not None:  # flush a run of whole decades
            parts.append("[1-9]" + _rep("[0-9]", full_from - 1, length - 2))
            full_from = None
        parts.extend(_same_length(str(lo_l), str(hi_l)))
    if b is None:
        start = full_from if full_from is not None else la + 1
        parts.append("[1-9]" + _rep("[0-9]", start - 1, None) if start > 1 else "[1-9][0-9]*")
    elif full_from is not None:
        parts.append("[1-9]" + _rep("[0-9]", full_from - 1, lb - 1))
    return parts


def _as_int_bound(v, up: bool) -> int | None:
    if v is None:
        return None
    if isinstance(v, float):
        if math.isnan(v):
            raise ValueError("NaN is not an integer bound")
        if math.isinf(v):
            if (v > 0) == up:
                return None
            raise ValueError(f"empty integer range: bound {v}")
        return math.floor(v) if up else math.ceil(v)
    return int(v)


def int_range(lo: int | None, hi: int | None) -> str:
    """Regex for the canonical JSON text of every integer in [lo, hi] (None = unbounded), and nothing else
    (no leading zeros, `-0` or `+`). Float bounds are rounded inwards. Raises ValueError for an empty range."""
    lo, hi = _as_int_bound(lo, False), _as_int_bound(hi, True)
    if lo is None and hi is None:
        return "(?:0|-?[1-9][0-9]*)"
    if lo is not None and hi is not None and lo > hi:
        raise ValueError(f"empty integer range [{lo}, {hi}]")
    parts: list[str] = []
    if hi is None or hi >= 0:
        parts.extend(_natural_range(max(lo, 0) if lo is not None else 0, hi))
    if lo is None or lo < 0:
        neg = _natural_range(1 if hi is None or hi >= 0 else -hi, None if lo is None else -lo)
        parts.append("-" + _alt(neg))
    return _alt(parts)


# ---------------------------------------------------------------------------------------------- numbers
_JSON_NUMBER = r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?"
_FRAC = r"(?:\.[0-9]+)?"


def _exact_value(v) -> tuple[Decimal, Decimal | None]:
    """A bound's exact value, and for a float its shortest repr (what json.dumps would write for it)."""
    if isinstance(v, bool):
        v = int(v)
    if isinstance(v, int):
        return Decimal(v), None
    if isinstance(v, Decimal):
        if not v.is_finite():
            raise ValueError(f"bad number bound {v}")
        return v, None
    f = float(v)
    return Decimal(f), Decimal(repr(f))


def _upper_threshold(e: Decimal, excl: bool, own_repr: Decimal | None):
    """Thresholds (value, exclusive) on a text's decimal value standing for `instance < e` (or <=): one for
    float spellings, one for integer spellings (None: the float one serves both exactly), and exactness.

    Python compares an instance with the bound exactly, but writes a float instance by its shortest repr,
    which can lie on the other side of the bound (beyond 2**53, or for a float bound whose repr differs from
    its binary value). Float texts: admit the repr of the last float inside (G), keep out the repr of the
    first float outside (N), shortest regex first (0.1, not its 55-digit binary value). Integer texts: every
    integer up to the bound."""
    def accepts(t, d):
        return d < t[0] or (d == t[0] and not t[1])

    m = (e - 1 if excl else e) if e == e.to_integral_value() else e.to_integral_value(rounding="ROUND_FLOOR")
    f = float(e)  # saturates to +-inf
    if math.isinf(f):
        f = math.copysign(1.7976931348623157e308, f)
    g = f if accepts((e, excl), Decimal(f)) else math.nextafter(f, -math.inf)
    n_ = math.nextafter(g, math.inf)
    r_g = Decimal(repr(g)) if math.isfinite(g) else None
    r_n = Decimal(repr(n_)) if math.isfinite(n_) else None
    cands = [(e, excl)] + ([(own_repr, excl)] if own_repr is not None else []) + \
            ([(r_g, False)] if r_g is not None else [])
    ok = [t for t in cands if (r_g is None or accepts(t, r_g)) and (r_n is None or not accepts(t, r_n))]

    def cost(t):  # digits, plus the alternatives an exclusive lower magnitude with trailing zeros costs
        digits = len(t[0].normalize().as_tuple().digits)
        return digits + (max(0, t[0].adjusted() + 1 - digits) if t[1] and t[0] < 0 else 0)

    t_float = min(ok, key=cost)
    if accepts(t_float, m) and not accepts(t_float, m + 1):
        return t_float, None, True
    if len(e.normalize().as_tuple().digits) <= 40:
        return t_float, (e, excl), True
    # A huge exact bound (a float's 300-digit binary expansion): round it outwards to 20 digits instead.
    q = Decimal(1).scaleb(e.adjusted() - 19)
    return t_float, (e.quantize(q, rounding="ROUND_CEILING"), False), False


def _sig_digits(d: Decimal) -> tuple[str, int]:
    """Significant digits (no trailing zeros) and decade k (10**k <= d < 10**(k+1)) of a positive Decimal."""
    t = d.normalize().as_tuple()
    digits = "".join(map(str, t.digits)).rstrip("0")
    return digits, d.adjusted()


def _significand(point: int | None, lo: tuple[str, bool] | None, hi: tuple[str, bool] | None,
                 ints: bool = True) -> str | None:
    """Regex for a significand digit string d1 d2 ... (d1 != 0) with its decimal point after `point` digits
    (None: the text is already past the point), constrained lexicographically (zero-padded) by lo/hi
    = (digits, exclusive). ints=False requires a fraction. Returns None if nothing fits."""
    frac = _FRAC if ints else r"\.[0-9]+"

    def can_end(i: int) -> bool:
        return i >= 1 and (point is None or i > point or i == point and ints)

    def dot(i: int) -> str:
        return r"\." if point is not None and i == point else ""

    def free(i: int) -> str:
        if point is None or i > point:
            return "[0-9]*"
        return _rep("[0-9]", point - i, point - i) + frac

    def zeros(i: int) -> str:
        if point is None or i > point:
            return "0*"
        return _rep("0", point - i, point - i) + (r"(?:\.0+)?" if ints else r"\.0+")

    def nonzero(i: int) -> str:
        if point is None or i > point:
            return "0*[1-9][0-9]*"
        if i == point:
            return r"\.0*[1-9][0-9]*"
        n = point - i
        alts = [_rep("0", j, j) + "[1-9]" + _rep("[0-9]", n - 1 - j, n - 1 - j) + frac for j in range(n)]
        alts.append(_rep("0", n, n) + r"\.0*[1-9][0-9]*")
        return _alt(alts)

    def gen(i: int, lo, hi) -> str | None:
        if lo is not None and lo[0] == "" and not lo[1]:
            lo = None  # matched an inclusive lower bound: anything further is >= it
        if hi is not None and hi[0] == "" and hi[1]:
            return None  # matched an exclusive upper bound: any continuation is >= it
        if i >= 1:
            lo_tight = lo is not None and lo[0] == ""
            hi_tight = hi is not None and hi[0] == ""
            if (lo is None or lo_tight) and (hi is None or hi_tight):
                if lo_tight and hi_tight:
                    return None
                return nonzero(i) if lo_tight else zeros(i) if hi_tight else free(i)
        end_ok = can_end(i) and (lo is None) and (hi is None or hi[0] != "" or not hi[1])
        groups: dict[tuple, list[int]] = {}
        for d in range(1 if i == 0 else 0, 10):
            nlo = nhi = None
            if lo is not None:
                l0 = int(lo[0][0]) if lo[0] else 0
                if d < l0:
                    continue
                nlo = (lo[0][1:], lo[1]) if d == l0 and lo[0] else (lo if d == l0 else None)
            if hi is not None:
                h0 = int(hi[0][0]) if hi[0] else 0
                if d > h0:
                    continue
                nhi = (hi[0][1:], hi[1]) if d == h0 and hi[0] else (hi if d == h0 else None)
            groups.setdefault((nlo, nhi), []).append(d)
        by_rest: dict[str, list[int]] = {}  # digits whose continuations read the same share one class
        for (nlo, nhi), ds in groups.items():
            rest = gen(i + 1, nlo, nhi)
            if rest is not None:
                by_rest.setdefault(rest, []).extend(ds)
        alts = [dot(i) + _digit_set(sorted(ds)) + rest for rest, ds in by_rest.items()]
        if not alts:
            return "" if end_ok else None
        body = "|".join(alts)
        if end_ok:
            return f"(?:{body})?"
        return body if len(alts) == 1 else f"(?:{body})"

    return gen(0, lo, hi)


def _exponent_range(k1: int | None, k2: int | None) -> list[str]:
    """Alternatives for exponent texts (after e/E; sign and leading zeros allowed) with value in [k1, k2]."""
    parts = []
    if k2 is None or k2 >= 1:
        parts.append(r"\+?0*" + _alt(_natural_range(max(k1, 1) if k1 is not None else 1, k2)))
    if (k1 is None or k1 <= 0) and (k2 is None or k2 >= 0):
        parts.append("[+-]?0+")
    if k1 is None or k1 <= -1:
        parts.append("-0*" + _alt(_natural_range(max(-k2, 1) if k2 is not None else 1,
                                                 None if k1 is None else -k1)))
    return parts


def _decade(k: int, lo, hi, ints: bool) -> list[str]:
    """Texts of values in decade k (10**k <= v < 10**(k+1)) whose significand lies within lo/hi."""
    out = []
    if k >= 0:
        s = _significand(k + 1, lo, hi, ints)
        if s is not None:
            out.append(s)
    else:
        s = _significand(None, lo, hi)
        if s is not None:
            out.append(r"0\." + _rep("0", -k - 1, -k - 1) + s)
    s = _significand(1, lo, hi)
    if s is not None:
        out.append(s + "[eE]" + _alt(_exponent_range(k, k)))
    return out


def _full_decades(k1: int | None, k2: int | None, ints: bool) -> list[str]:
    """Texts of every value in decades k1..k2 (None = unbounded that way)."""
    if k1 is not None and k2 is not None and k1 > k2:
        return []
    out = []
    if k2 is None or k2 >= 0:
        lo_d = max(k1, 0) if k1 is not None else 0
        out.append("[1-9]" + _rep("[0-9]", lo_d, k2) + (_FRAC if ints else r"\.[0-9]+"))
    if k1 is None or k1 < 0:
        z1 = -min(k2, -1) - 1 if k2 is not None else 0
        z2 = None if k1 is None else -k1 - 1
        out.append(r"0\." + _rep("0", z1, z2) + "[1-9][0-9]*")
    out.append("[1-9]" + _FRAC + "[eE]" + _alt(_exponent_range(k1, k2)))
    return out


def _magnitudes(a: Decimal | None, a_x: bool, b: Decimal | None, b_x: bool, ints: bool = True) -> list[str]:
    """Unsigned texts of non-zero values v with a (<, <=) v (<, <=) b; a None = above 0, b None = unbounded.
    ints=False leaves out the integer spellings (no fraction, no exponent)."""
    if a is not None and a <= 0:
        a = None
    if a is not None and b is not None and (a > b or a == b and (a_x or b_x)):
        return []
    sa = _sig_digits(a) if a is not None else None
    sb = _sig_digits(b) if b is not None else None
    if sa and sb and sa[1] == sb[1]:
        return _decade(sa[1], (sa[0], a_x), (sb[0], b_x), ints)
    out = []
    if sa:
        out += _decade(sa[1], (sa[0], a_x), None, ints)
    if sb:
        out += _decade(sb[1], None, (sb[0], b_x), ints)
    out += _full_decades(sa[1] + 1 if sa else None, sb[1] - 1 if sb else None, ints)
    return out


def number_range(lo: float | None, hi: float | None, lo_exclusive: bool = False,
                 hi_exclusive: bool = False) -> tuple[str, bool]:
    """Regex for JSON number text within the bounds (None = unbounded), and whether it is exact.

    Accepted: the `json.dumps` text of every int and float within the bounds (`-0.0` counts as zero), plus
    other decimal spellings (trailing zeros) and exponent spellings with one leading digit. Exact: no text is
    accepted whose value, as Python parses and compares it, lies outside. Exponent spellings in general
    (`10e1`) are left out: with unbounded exponents they cannot be bounded by a regular language. Inexact only
    for float bounds whose exact binary expansion runs past 40 digits (1e300 and the like). Unbounded: every
    JSON number spelling."""
    # Exact decimal arithmetic: a float's exact value has up to ~770 digits, an int bound any number.
    digits = max(len(str(v)) for v in (lo, hi, 0) if isinstance(v, int))
    with localcontext(Context(prec=max(2000, 2 * digits + 10))):
        return _number_range(lo, hi, lo_exclusive, hi_exclusive)


def _int_bound(t: tuple[Decimal, bool] | None, up: bool) -> int | None:
    """The last integer inside a threshold (value, exclusive)."""
    if t is None:
        return None
    v, excl = t
    n = int(v.to_integral_value(rounding="ROUND_FLOOR" if up else "ROUND_CEILING"))
    if excl and n == v:
        n += -1 if up else 1
    return n


def _signed(lo: tuple[Decimal, bool] | None, hi: tuple[Decimal, bool] | None, ints: bool) -> list[str]:
    """Texts of the non-zero values within (lo, hi) thresholds: positive ones, then `-` and the negative ones."""
    parts = []
    if hi is None or hi[0] > 0:
        parts += _magnitudes(lo[0] if lo is not None and lo[0] > 0 else None, bool(lo and lo[1]),
                             None if hi is None else hi[0], bool(hi and hi[1]), ints)
    if lo is None or lo[0] < 0:
        neg = _magnitudes(-hi[0] if hi is not None and hi[0] < 0 else None, bool(hi and hi[1]),
                          None if lo is None else -lo[0], bool(lo and lo[1]), ints)
        if neg:
            parts.append("-" + _alt(neg))
    return parts


def _number_range(lo, hi, lo_exclusive: bool, hi_exclusive: bool) -> tuple[str, bool]:
    for v in (lo, hi):
        if isinstance(v, float) and math.isnan(v):
            raise ValueError("NaN is not a number bound")
    if isinstance(lo, float) and math.isinf(lo):
        if lo > 0:
            raise ValueError("empty number range")
        lo = None
    if isinstance(hi, float) and math.isinf(hi):
        if hi < 0:
            raise ValueError("empty number range")
        hi = None
    if lo is None and hi is None:
        return _JSON_NUMBER, True
    exact = True
    elo = ehi = None
    lo_f = hi_f = lo_i = hi_i = None  # thresholds (value, exclusive) for float and integer spellings
    if lo is not None:
        elo, r = _exact_value(lo)
        tf, ti, ok = _upper_threshold(-elo, lo_exclusive, None if r is None else -r)
        lo_f, lo_i, exact = (-tf[0], tf[1]), ti and (-ti[0], ti[1]), exact and ok
    if hi is not None:
        ehi, r = _exact_value(hi)
        hi_f, hi_i, ok = _upper_threshold(ehi, hi_exclusive, r)
        exact = exact and ok
    if elo is not None and ehi is not None and (elo > ehi or elo == ehi and (lo_exclusive or hi_exclusive)):
        raise ValueError(f"empty number range {lo}..{hi}")
    zero_ok = (elo is None or elo < 0 or elo == 0 and not lo_exclusive) and \
              (ehi is None or ehi > 0 or ehi == 0 and not hi_exclusive)
    if lo_i is None and hi_i is None:  # one threshold per side serves every spelling
        parts = ([r"-?0(?:\.0+)?"] if zero_ok else []) + _signed(lo_f, hi_f, ints=True)
    else:  # integer spellings get their own exact range
        parts = ([r"-?0\.0+"] if zero_ok else []) + _signed(lo_f, hi_f, ints=False)
        ilo, ihi = _int_bound(lo_i or lo_f, up=False), _int_bound(hi_i or hi_f, up=True)
        if ilo is None or ihi is None or ilo <= ihi:
            parts.append(int_range(ilo, ihi))
    if not parts:
        raise ValueError(f"empty number range {lo}..{hi}")
    return _alt(parts), exact


# ---------------------------------------------------------------------------------------------- strings
# One JSON string character: a raw character, a short escape, or a \u escape.
_UNIT = r'(?:[^"\\\x00-\x1f]|\\["\\\/bfnrt]|\\u[0-9a-fA-F]{4})'


def string_regex(min_len: int = 0, max_len: int | None = None) -> str:
    """A JSON string (with quotes) of min_len..max_len characters (an escaped surrogate pair counts 2)."""
    min_len = int(min_len)
    if min_len < 0 or max_len is not None and int(max_len) < min_len:
        raise ValueError(f"bad string length bounds {min_len}..{max_len}")
    return '"' + (_rep(_UNIT, min_len, None if max_len is None else int(max_len)) or "") + '"'


def any_string_regex() -> str:
    """Any JSON string."""
    return string_regex()


# ---------------------------------------------------------------------------------------------- formats
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = rf"{_OCTET}(?:\.{_OCTET}){{3}}"
_H16 = "[0-9a-fA-F]{1,4}"
_LS32 = rf"(?:{_H16}:{_H16}|{_IPV4})"


def _h16s(n: int) -> str:
    """0..n h16 groups followed by ':'-separated one more (RFC 3986 `[ *n( h16 ":" ) h16 ]`)."""
    return f"(?:{_rep(_H16 + ':', 0, n)}{_H16})?" if n else f"(?:{_H16})?"


_IPV6 = "(?:" + "|".join([
    f"(?:{_H16}:){{6}}{_LS32}",
    f"::(?:{_H16}:){{5}}{_LS32}",
    f"{_h16s(0)}::(?:{_H16}:){{4}}{_LS32}",
    f"{_h16s(1)}::(?:{_H16}:){{3}}{_LS32}",
    f"{_h16s(2)}::(?:{_H16}:){{2}}{_LS32}",
    f"{_h16s(3)}::{_H16}:{_LS32}",
    f"{_h16s(4)}::{_LS32}",
    f"{_h16s(5)}::{_H16}",
    f"{_h16s(6)}::",
]) + ")"
_LABEL = "[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = rf"{_LABEL}(?:\.{_LABEL})*"
_LEAP = "(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:[02468][048]|[13579][26])00)"
_DATE = ("(?:[0-9]{4}-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)"
         f"|02-(?:0[1-9]|1[0-9]|2[0-8]))|{_LEAP}-02-29)")
_HOUR, _FRACSEC = "(?:[01][0-9]|2[0-3])", r"(?:\.[0-9]+)?"
# A leap second is 23:59:60 UTC. With a zero offset that is checked; with a whole-hour offset only the
# minute (59) is; with other offsets any minute passes (the hour/minute arithmetic would take ~1,400 branches).
_TIME = ("(?:" + "|".join([
    rf"{_HOUR}:[0-5][0-9]:[0-5][0-9]{_FRACSEC}(?:[Zz]|[+-]{_HOUR}:[0-5][0-9])",
    rf"23:59:60{_FRACSEC}(?:[Zz]|[+-]00:00)",
    rf"{_HOUR}:59:60{_FRACSEC}[+-](?:0[1-9]|1[0-9]|2[0-3]):00",
    rf"{_HOUR}:[0-5][0-9]:60{_FRACSEC}[+-]{_HOUR}:(?:0[1-9]|[1-5][0-9])",
]) + ")")
_HEX = "[0-9a-fA-F]"
_UUID = f"{_HEX}{{8}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{12}}"
# RFC 5322 dot-atom local part, or a quoted local part (its `"` and `\` appear JSON-escaped in the text).
_ATEXT = r"[A-Za-z0-9!#$%\&'*+\/=?\^_`{\|}\~\-]"
_QUOTED_LOCAL = r'\\"(?:[ !#-\[\]-\~]|\\\\(?:[ !#-\[\]-\~]|\\"|\\\\))*\\"'
_EMAIL = (rf"(?:{_ATEXT}+(?:\.{_ATEXT}+)*|{_QUOTED_LOCAL})@"
          rf"(?:{_HOSTNAME}|\[{_IPV4}\]|\[IPv6:{_IPV6}\])")
# RFC 3986 URI.
_PCT = f"%{_HEX}{{2}}"
_UNRES_SUB = r"A-Za-z0-9\-._\~!$\&'()*+,;="
_PCHAR = rf"(?:[{_UNRES_SUB}:@]|{_PCT})"
_AUTHORITY = (rf"(?:(?:[{_UNRES_SUB}:]|{_PCT})*@)?"
              rf"(?:\[(?:{_IPV6}|v{_HEX}+\.[{_UNRES_SUB}:]+)\]|(?:[{_UNRES_SUB}]|{_PCT})*)(?::[0-9]*)?")
_PATH_TAIL = rf"(?:\/{_PCHAR}*)*"
_URI = (rf"[A-Za-z][A-Za-z0-9+\-.]*:(?:\/\/{_AUTHORITY}{_PATH_TAIL}|\/(?:{_PCHAR}+{_PATH_TAIL})?"
        rf"|{_PCHAR}+{_PATH_TAIL})?(?:\?(?:{_PCHAR}|[\/?])*)?(?:#(?:{_PCHAR}|[\/?])*)?")

_FORMATS = {
    "date": _DATE,
    "time": _TIME,
    "date-time": f"{_DATE}[Tt]{_TIME}",
    "email": _EMAIL,
    "uuid": _UUID,
    "uri": _URI,
    "ipv4": _IPV4,
    "ipv6": _IPV6,
    "hostname": _HOSTNAME,
}


def format_regex(fmt: str) -> str | None:
    """JSON-string regex (with quotes) for a known `format`, or None."""
    body = _FORMATS.get(fmt)
    return None if body is None else f'"{body}"'


# ---------------------------------------------------------------------------------------------- char sets
_MAX = 0x10FFFF
_SURROGATES = (0xD800, 0xDFFF)
Ranges = tuple  # sorted, disjoint, non-adjacent ((lo, hi), ...) code point intervals


def _norm(ranges) -> Ranges:
    out: list[list[int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], hi)
        else:
            out.append([lo, hi])
    return tuple((a, b) for a, b in out)


def _invert(ranges: Ranges) -> Ranges:
    out, nxt = [], 0
    for lo, hi in ranges:
        if lo > nxt:
            out.append((nxt, lo - 1))
        nxt = hi + 1
    if nxt <= _MAX:
        out.append((nxt, _MAX))
    return tuple(out)


def _intersect(a: Ranges, b: Ranges) -> Ranges:
    out, i, j = [], 0, 0
    while i < len(a) and j < len(b):
        lo, hi = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if lo <= hi:
            out.append((lo, hi))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return tuple(out)


def _minus(a: Ranges, b: Ranges) -> Ranges:
    return _intersect(a, _invert(b))


def _chars(s: str) -> Ranges:
    return _norm((ord(c), ord(c)) for c in s)


# ECMA-262 classes: \d and \w are ASCII; \s is WhiteSpace plus LineTerminator.
_DIGIT = ((0x30, 0x39),)
_WORD = _norm([(0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)])
_SPACE = _norm([(0x09, 0x0D), (0x20, 0x20), (0xA0, 0xA0), (0x1680, 0x1680), (0x2000, 0x200A),
                (0x2028, 0x2029), (0x202F, 0x202F), (0x205F, 0x205F), (0x3000, 0x3000), (0xFEFF, 0xFEFF)])
_DOT = _invert(_chars("\n\r\u2028\u2029"))  # ECMA `.` excludes the line terminators
_RAW = _minus(((0x20, _MAX),), _chars('"\\'))  # characters json.dumps writes as themselves
_SHORT_ESCAPES = {0x22: '"', 0x5C: "\\\\", 0x08: "b", 0x0C: "f", 0x0A: "n", 0x0D: "r", 0x09: "t"}
_CLASS_SPECIAL = set("\\]-^[&~|/")
_PLAIN_SPECIAL = set(".^$*+?{}[]|()\\/")


def _char_rx(cp: int, special: set[str]) -> str:
    """A character as regex text: escaped if special, a \\u escape if it is not a visible BMP character."""
    c = chr(cp)
    if c in special:
        return "\\" + c
    if 0x20 < cp < 0x7F or cp == 0x20:
        return c
    if cp <= 0xFFFF and (not c.isprintable() or c.isspace() or 0xD800 <= cp <= 0xDFFF):
        return f"\\x{cp:02x}" if cp <= 0xFF else f"\\u{cp:04x}"
    return c  # visible character (non-BMP ones stay literal: no escapes above U+FFFF)


def _class_body(ranges: Ranges) -> str:
    out = []
    for lo, hi in ranges:
        if lo == hi:
            out.append(_char_rx(lo, _CLASS_SPECIAL))
        elif hi == lo + 1:
            out.append(_char_rx(lo, _CLASS_SPECIAL) + _char_rx(hi, _CLASS_SPECIAL))
        else:
            out.append(_char_rx(lo, _CLASS_SPECIAL) + "-" + _char_rx(hi, _CLASS_SPECIAL))
    return "".join(out)


def _raw_class(ranges: Ranges) -> str | None:
    """Regex class for raw characters in `ranges` (a subset of _RAW), the shorter of [..] and [^..]."""
    ranges = _minus(ranges, (_SURROGATES,))  # Rust classes cannot hold surrogates
    if not ranges:
        return None
    if len(ranges) == 1 and ranges[0][0] == ranges[0][1]:
        return _char_rx(ranges[0][0], _PLAIN_SPECIAL)
    pos = "[" + _class_body(ranges) + "]"
    missing = _minus(_minus(_RAW, ranges), (_SURROGATES,))
    neg = '[^"\\\\\\x00-\\x1f' + _class_body(missing) + "]"
    return pos if len(pos) <= len(neg) else neg


def _hex_class(nibbles: list[int]) -> str:
    if len(nibbles) == 16:
        return "[0-9a-fA-F]"
    ranges = _norm((ord(c), ord(c)) for n in nibbles for c in {f"{n:x}", f"{n:X}"})
    if len(ranges) == 1 and ranges[0][0] == ranges[0][1]:
        return chr(ranges[0][0])
    return "[" + _class_body(ranges) + "]"


def _units(ranges: Ranges) -> str:
    """Regex for one JSON string unit (as json.dumps writes it) decoding to a character in `ranges`."""
    alts = []
    raw = _raw_class(_intersect(ranges, _RAW))
    if raw:
        alts.append(raw)
    members = {cp for lo, hi in _intersect(ranges, ((0, 0x1F), (0x22, 0x22), (0x5C, 0x5C)))
               for cp in range(lo, hi + 1)}
    short = [_SHORT_ESCAPES[cp] for cp in sorted(members) if cp in _SHORT_ESCAPES]
    if short:
        alts.append("\\\\" + (short[0] if len(short) == 1 else "[" + "".join(short) + "]"))
    ctrl = sorted(cp for cp in members if cp not in _SHORT_ESCAPES)
    if ctrl:
        by_high = {}
        for cp in ctrl:
            by_high.setdefault(cp >> 4, []).append(cp & 15)
        hexes = [f"{h}{_hex_class(lows)}" for h, lows in sorted(by_high.items())]
        alts.append("\\\\u00" + (hexes[0] if len(hexes) == 1 else "(?:" + "|".join(hexes) + ")"))
    if not alts:
        raise UnsupportedPattern("a character class that matches nothing")
    return alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"


@lru_cache(maxsize=None)
def _unicode_category(prefix: str) -> Ranges:
    """Code points whose general category starts with `prefix` (for \\p{L}, \\p{Lu}, ...)."""
    out, start = [], None
    for cp in range(_MAX + 1):
        hit = unicodedata.category(chr(cp)).startswith(prefix)
        if hit and start is None:
            start = cp
        elif not hit and start is not None:
            out.append((start, cp - 1))
            start = None
    if start is not None:
        out.append((start, _MAX))
    return tuple(out)


# ---------------------------------------------------------------------------------------------- patterns
_CATEGORIES = {
    _sre.CATEGORY_DIGIT: _DIGIT, _sre.CATEGORY_NOT_DIGIT: _invert(_DIGIT),
    _sre.CATEGORY_WORD: _WORD, _sre.CATEGORY_NOT_WORD: _invert(_WORD),
    _sre.CATEGORY_SPACE: _SPACE, _sre.CATEGORY_NOT_SPACE: _invert(_SPACE),
}
_BOUNDARIES = (_sre.AT_BOUNDARY, _sre.AT_NON_BOUNDARY)
_REPEATS = (_sre.MAX_REPEAT, _sre.MIN_REPEAT)
_GC_NAMES = {  # ECMA \p{...} General_Category names this module expands
    "L": "L", "Letter": "L", "Lu": "Lu", "Uppercase_Letter": "Lu", "Ll": "Ll", "Lowercase_Letter": "Ll",
    "Lt": "Lt", "Titlecase_Letter": "Lt", "Lm": "Lm", "Modifier_Letter": "Lm", "Lo": "Lo",
    "Other_Letter": "Lo", "N": "N", "Number": "N", "Nd": "Nd", "Decimal_Number": "Nd", "digit": "Nd",
    "P": "P", "Punctuation": "P", "S": "S", "Symbol": "S", "Z": "Z", "Separator": "Z",
}


def _preprocess(pattern: str) -> tuple[str, dict[str, Ranges]]:
    """ECMA-only syntax rewritten for Python's parser: `(?<name>` groups, `\\cX`, a literal `{,`, a class
    escape before `-` in a class, and `\\p{..}` (replaced by a private-use placeholder, expanded later)."""
    out, props, i, in_class = [], {}, 0, False
    n = len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\" and i + 1 < n:
            nxt = pattern[i + 1]
            if nxt == "c" and i + 2 < n and pattern[i + 2].isascii() and pattern[i + 2].isalpha():
                out.append(f"\\x{ord(pattern[i + 2]) % 32:02x}")
                i += 3
                continue
            if nxt in "pP" and i + 2 < n and pattern[i + 2] == "{":
                end = pattern.find("}", i)
                name = pattern[i + 3:end] if end > 0 else ""
                if name.startswith("General_Category=") or name.startswith("gc="):
                    name = name.split("=", 1)[1]
                if end < 0 or name not in _GC_NAMES:
                    raise UnsupportedPattern(f"unsupported property escape \\{nxt}{{{name}}}")
                ranges = _unicode_category(_GC_NAMES[name])
                if nxt == "P":
                    ranges = _invert(ranges)
                mark = chr(0xF0000 + len(props))  # a placeholder character, swapped for the class later
                props[mark] = ranges
                out.append(mark if in_class else "[" + mark + "]")
                i = end + 1
                continue
            if in_class and nxt in "dDwWsS" and i + 3 < n and pattern[i + 2] == "-" and pattern[i + 3] != "]":
                out.append(pattern[i:i + 2] + "\\-")  # ECMA: a class escape cannot start a range
                i += 3
                continue
            out.append(pattern[i:i + 2])
            i += 2
            continue
        if in_class:
            if c == "]":
                in_class = False
        elif c == "[":
            in_class = True
            out.append(c)
            if pattern.startswith("^", i + 1):
                out.append("^")
                i += 1
            if pattern.startswith("]", i + 1):  # ECMA `[]` / `[^]`: empty and full classes
                raise UnsupportedPattern("empty class")
            i += 1
            continue
        elif c == "(" and pattern.startswith("(?<", i) and not pattern.startswith(("(?<=", "(?<!"), i):
            out.append("(?P<")
            i += 3
            continue
        elif c == "{" and pattern.startswith("{,", i):
            out.append("\\{")  # ECMA reads `{,n}` literally; Python would take it as a quantifier
            i += 1
            continue
        out.append(c)
        i += 1
    return "".join(out), props


class _Emitter:
    def __init__(self, props: dict[str, Ranges]):
        self.props = props
        self.exact = True

    def charset(self, items) -> Ranges:
        negate, ranges = False, []
        for op, av in items:
            if op is _sre.NEGATE:
                negate = True
            elif op is _sre.LITERAL:
                ranges.extend(self.props.get(chr(av), ((av, av),)))
            elif op is _sre.RANGE:
                if chr(av[0]) in self.props or chr(av[1]) in self.props:
                    raise UnsupportedPattern("a property escape as a range end")
                ranges.append(av)
            elif op is _sre.CATEGORY and av in _CATEGORIES:
                ranges.extend(_CATEGORIES[av])
            else:
                raise UnsupportedPattern(f"unsupported class item {op}")
        r = _norm(ranges)
        return _invert(r) if negate else r

    def seq(self, items) -> str:
        return "".join(self.item(op, av) for op, av in items)

    def item(self, op, av) -> str:
        if op is _sre.LITERAL:
            return _units(self.props.get(chr(av), ((av, av),)))
        if op is _sre.NOT_LITERAL:
            return _units(_invert(self.props.get(chr(av), ((av, av),))))
        if op is _sre.ANY:
            return _units(_DOT)
        if op is _sre.IN:
            return _units(self.charset(av))
        if op is _sre.BRANCH:
            alts = [self.seq(b) for b in av[1]]
            nonempty = [a for a in alts if a]
            if not nonempty:
                return ""
            if len(nonempty) < len(alts):
                return _rep(_alt(nonempty), 0, 1)
            return _alt(nonempty)
        if op is _sre.SUBPATTERN:
            _, add, dele, sub = av
            if add or dele:
                raise UnsupportedPattern("inline flags")
            return self.seq(sub)  # alternations come back grouped already
        if op in _REPEATS:
            lo, hi, sub = av
            return _rep(self.seq(sub), lo, None if hi == _sre.MAXREPEAT else hi)
        if op is _sre.AT:
            if av in _BOUNDARIES:
                self.exact = False  # \b, \B need look-around: drop them, accepting a superset
                return ""
            raise UnsupportedPattern("an anchor that is not at the start or end of the pattern")
        if op in (_sre.ASSERT, _sre.ASSERT_NOT):
            raise UnsupportedPattern("look-around")
        if op in (_sre.GROUPREF, _sre.GROUPREF_EXISTS):
            raise UnsupportedPattern("backreference")
        raise UnsupportedPattern(f"unsupported construct {op}")


def _has_anchor(op, av) -> bool:
    if op is _sre.AT:
        return av in (_sre.AT_BEGINNING, _sre.AT_END)
    if op is _sre.BRANCH:
        return any(_has_anchor(o, a) for b in av[1] for o, a in b)
    if op is _sre.SUBPATTERN:
        return any(_has_anchor(o, a) for o, a in av[3])
    if op in _REPEATS:
        return any(_has_anchor(o, a) for o, a in av[2])
    return False


def _split(item) -> list[list] | None:
    """A group or alternation as its alternatives (lists of items), or None for anything else."""
    op, av = item
    if op is _sre.BRANCH:
        return [list(b) for b in av[1]]
    if op is _sre.SUBPATTERN and not av[1] and not av[2]:
        return [list(av[3])]
    return None


def _distribute(seq: list, budget: list[int]) -> list[list]:
    """Pull groups holding ^/$ at either edge out into top-level alternatives, so every anchor ends up at the
    edge of a branch: `^(a|$)` -> `^a`, `^$`."""
    for edge in (0, -1):
        if seq and _has_anchor(*seq[edge]):
            alts = _split(seq[edge])
            if alts is not None:
                budget[0] -= len(alts)
                if budget[0] < 0:
                    raise UnsupportedPattern("too many anchored alternatives")
                out = []
                for a in alts:
                    out += _distribute(a + seq[1:] if edge == 0 else seq[:-1] + a, budget)
                return out
    return [seq]


def _absorb(seq: list) -> list:
    """Drop what the "any characters" padding of an unanchored side already covers, at the front of `seq`:
    `x*` disappears and `x{m,}` becomes `x{m}` (the same language, and no quadratic backtracking in `re`)."""
    while seq and seq[0][0] in _REPEATS and seq[0][1][0] == 0:
        seq = seq[1:]
    if seq and seq[0][0] in _REPEATS and seq[0][1][1] == _sre.MAXREPEAT:
        op, (lo, _, sub) = seq[0]
        seq = [(op, (lo, lo, sub))] + seq[1:]
    return seq


def pattern_regex(pattern: str) -> tuple[str, bool]:
    """Regex over the JSON text (with quotes) of strings in which the ECMA-262 `pattern` finds a match.

    Returns (regex, exact): exact is False when a construct was widened (word boundaries are dropped).
    ECMA semantics: \\d and \\w are ASCII, \\s is ECMA white space, `.` excludes line terminators, `$` is the
    end of the string. Raises UnsupportedPattern for look-around, backreferences, inline flags, and syntax
    Python's parser rejects."""
    if not isinstance(pattern, str):
        raise UnsupportedPattern(f"pattern is not a string: {pattern!r}")
    text, props = _preprocess(pattern)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            parsed = _sre_parse.parse(text)
    except (re.error, RecursionError, OverflowError) as e:
        raise UnsupportedPattern(str(e)) from None
    if parsed.state.flags & ~(_sre.SRE_FLAG_UNICODE):
        raise UnsupportedPattern("inline flags")
    items = list(parsed)
    branches = _split(items[0]) if len(items) == 1 and items[0][0] is _sre.BRANCH else [items]
    emitter = _Emitter(props)
    budget = [256]
    alts = []
    for branch in branches:
        for seq in _distribute(branch, budget):
            start = end = False
            while seq and seq[0] == (_sre.AT, _sre.AT_BEGINNING):
                seq, start = seq[1:], True
            while seq and seq[-1] == (_sre.AT, _sre.AT_END):
                seq, end = seq[:-1], True
            if not start:
                seq = _absorb(seq)
            if not end:
                seq = _absorb(seq[::-1])[::-1]
            body = emitter.seq(seq)
            pad_start, pad_end = ("" if start else _UNIT + "*"), ("" if end else _UNIT + "*")
            alts.append(pad_start + body + pad_end if body else pad_start or pad_end)
    if _UNIT + "*" in alts:  # some branch matches every string
        alts = [_UNIT + "*"]
    nonempty = [a for a in dict.fromkeys(alts) if a]
    if not nonempty:
        return '""', emitter.exact
    body = _alt(nonempty)
    return '"' + (_rep(body, 0, 1) if len(nonempty) < len(alts) else body) + '"', emitter.exact


def bound_repeats(regex: str, n: int) -> str:
    """Replace every unbounded quantifier (`*`, `+`, `{m,}`) outside character classes with an upper bound of
    `n`, so a format regex (email local parts, URI paths) cannot run on forever under a length budget."""
    out, i, in_class = [], 0, False
    while i < len(regex):
        ch = regex[i]
        if ch == "\\":
            out.append(regex[i:i + 2])
            i += 2
            continue
        if in_class:
            in_class = ch != "]"
            out.append(ch)
        elif ch == "[":
            in_class = True
            out.append(ch)
            if regex[i + 1:i + 2] == "]":  # a literal ] right after [ belongs to the class
                out.append("]")
                i += 1
        elif ch == "*":
            out.append(f"{{0,{n}}}")
        elif ch == "+":
            out.append(f"{{1,{n}}}")
        elif ch == "{":
            m = re.match(r"\{(\d+),\}", regex[i:])
            if m:
                out.append(f"{{{m[1]},{max(n, int(m[1]))}}}")
                i += len(m[0])
                continue
            out.append(ch)
        else:
            out.append(ch)
        i += 1
    return "".join(out)
