"""constrained_fc.compiler.regex: each regex is checked against an independent oracle (Python's own comparisons, the
length of the decoded string, `re.search` on the decoded string, the JSON-Schema-Test-Suite labels), and
every one must be accepted by both llguidance and lark."""
import datetime
import glob
import json
import math
import re
import time
import uuid
from decimal import Decimal
from pathlib import Path

import lark
import llguidance
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from constrained_fc.compiler.regex import (UnsupportedPattern, any_string_regex, format_regex, int_range, number_range,
                                  pattern_regex, string_regex)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
JSTS = DATA / "jsts" / "draft2020-12"
needs_data = pytest.mark.skipif(not JSTS.is_dir(), reason="shared/data (JSON-Schema-Test-Suite) not present")
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def text(value) -> str:
    return json.dumps(value, ensure_ascii=False)


def fm(regex: str, value) -> bool:
    return re.fullmatch(regex, text(value)) is not None


def lark_terminal(regex: str) -> str:
    out, escaped = [], False
    for ch in regex:
        out.append("\\/" if ch == "/" and not escaped else ch)
        escaped = ch == "\\" and not escaped
    return "/" + "".join(out) + "/"


def assert_engines_accept(regex: str) -> None:
    assert lark_terminal(regex) == "/" + regex + "/", "an unescaped / in " + regex
    grammar = "start: X\nX: " + lark_terminal(regex) + "\n"
    assert llguidance.LLMatcher.validate_grammar_with_warnings(
        llguidance.LLMatcher.grammar_from_lark(grammar)) == (False, []), regex
    lark.Lark(grammar, parser="lalr")
    re.compile(regex)
    bare = regex.replace("\\\\", "")
    for construct in ("(?=", "(?!", "(?<", "(?P", "\\d", "\\w", "\\s", "\\D", "\\W", "\\S", "\\b", "\\U", "\\x{"):
        assert construct not in bare, (construct, regex)


class _ByteTokenizer:
    """One token per byte, so llguidance can be asked whether it accepts a given text."""
    eos_token_id = 256
    bos_token_id = None
    tokens = [bytes([i]) for i in range(256)] + [b"<eos>"]
    special_token_ids = [256]

    def __call__(self, s):
        return list(s.encode() if isinstance(s, str) else s)


_BYTE_TOK = llguidance.LLTokenizer(llguidance.TokenizerWrapper(_ByteTokenizer()), slices=[])


def llg_fullmatch(regex: str, candidate: str) -> bool:
    grammar = llguidance.LLMatcher.grammar_from_lark("start: X\nX: " + lark_terminal(regex) + "\n")
    m = llguidance.LLMatcher(_BYTE_TOK, grammar, log_level=0)
    assert not m.is_error(), m.get_error()
    return bool(m.consume_tokens(list(candidate.encode()))) and m.is_accepting()


# -------------------------------------------------------------------------------------------------- int_range
def _in(n, lo, hi) -> bool:
    return (lo is None or n >= lo) and (hi is None or n <= hi)


bound = st.none() | st.integers(-10**20, 10**20) | st.integers(-300, 300)


@FAST
@given(lo=bound, hi=bound, data=st.data())
def test_int_range_is_exact(lo, hi, data):
    assume(lo is None or hi is None or lo <= hi)
    regex = int_range(lo, hi)
    near = [b + d for b in (lo, hi) if b is not None for d in (-2, -1, 0, 1, 2)]
    ns = near + [data.draw(st.integers(-10**21, 10**21)), data.draw(st.integers(-1000, 1000)), 0]
    for n in ns:
        assert fm(regex, n) == _in(n, lo, hi), (lo, hi, n, regex)


@pytest.mark.parametrize("lo,hi", [(0, 100), (-5, 5), (None, 0), (0, None), (None, None), (17, None), (-100, -17),
                                   (10**18, None), (-10**18, 10**18), (123, 4567), (1, 1), (0, 0), (-1, -1),
                                   (-2**63, 2**63 - 1), (99, 100), (9, 10), (1000, 9999)])
def test_int_range_edges(lo, hi):
    regex = int_range(lo, hi)
    for b in (lo, hi, 0, 1, -1, 10**19):
        if b is None:
            continue
        for n in (b - 1, b, b + 1, 10 * b, -b):
            assert fm(regex, n) == _in(n, lo, hi), (lo, hi, n)
    for junk in ("-0", "00", "01", "+1", "1.0", "1e2", " 1", "", "-", "1-"):
        assert not re.fullmatch(regex, junk), (lo, hi, junk)


def test_int_range_bounds_from_floats_and_empty_ranges():
    assert fm(int_range(0.5, 3.5), 1) and fm(int_range(0.5, 3.5), 3)
    assert not fm(int_range(0.5, 3.5), 0) and not fm(int_range(0.5, 3.5), 4)
    assert fm(int_range(float("-inf"), float("inf")), -7)
    with pytest.raises(ValueError):
        int_range(5, 4)
    with pytest.raises(ValueError):
        int_range(0.2, 0.8)


# ------------------------------------------------------------------------------------------------ number_range
def _inside(v, lo, hi, lx, hx) -> bool:
    """What a validator computes: Python's exact comparison of the instance with the bounds."""
    if lo is not None and (v < lo or lx and v == lo):
        return False
    if hi is not None and (v > hi or hx and v == hi):
        return False
    return True


finite = st.floats(allow_nan=False, allow_infinity=False)
num_bound = st.none() | st.integers(-10**6, 10**6) | finite | st.floats(-1000, 1000).map(lambda x: round(x, 2)) \
    | st.integers(-2**70, 2**70)
num_value = st.integers(-10**6, 10**6) | finite | st.floats(-1000, 1000) | st.integers(-2**70, 2**70)


@FAST
@given(lo=num_bound, hi=num_bound, lx=st.booleans(), hx=st.booleans(), values=st.lists(num_value, max_size=12))
def test_number_range_never_rejects_and_exact_means_exact(lo, hi, lx, hx, values):
    assume(lo is None or hi is None or lo < hi or lo == hi and not (lx or hx))
    regex, exact = number_range(lo, hi, lx, hx)
    near = []
    for b in (lo, hi):
        if b is not None:
            near += [b, float(b), math.nextafter(float(b), math.inf), math.nextafter(float(b), -math.inf)]
            if isinstance(b, int):
                near += [b - 1, b + 1]
    for v in values + near + [0, 0.0, -0.0, 1e-05, 1e+20, 1e16, 100.0]:
        if isinstance(v, float) and math.isinf(v):
            continue  # not a JSON number
        inside = _inside(v, lo, hi, lx, hx)
        got = fm(regex, v)
        assert got or not inside, ("false reject", lo, hi, lx, hx, text(v))
        assert not (exact and got and not inside), ("over-accept while exact", lo, hi, lx, hx, text(v))


json_number_text = st.from_regex(r"-?(?:0|[1-9][0-9]{0,8})(?:\.[0-9]{1,6})?(?:[eE][+-]?[0-9]{1,3})?", fullmatch=True)
small_bound = st.none() | st.integers(-10**4, 10**4) | st.floats(-10**4, 10**4).map(lambda x: round(x, 3))


@FAST
@given(lo=small_bound, hi=small_bound, lx=st.booleans(), hx=st.booleans(), texts=st.lists(json_number_text))
def test_number_range_accepts_only_values_inside_whatever_the_spelling(lo, hi, lx, hx, texts):
    assume(lo is None or hi is None or lo < hi)
    regex, exact = number_range(lo, hi, lx, hx)
    assert exact
    dlo = None if lo is None else Decimal(repr(lo) if isinstance(lo, float) else lo)
    dhi = None if hi is None else Decimal(repr(hi) if isinstance(hi, float) else hi)
    for t in texts:
        if re.fullmatch(regex, t):
            assert _inside(Decimal(t), dlo, dhi, lx, hx), (lo, hi, lx, hx, t)
        elif "e" not in t.lower() or re.fullmatch(r"-?[1-9](?:\.[0-9]+)?[eE].*", t):
            # decimal spellings (trailing zeros too) and exponent spellings with one leading digit, as
            # json.dumps writes them, are all accepted when inside
            assert not _inside(Decimal(t), dlo, dhi, lx, hx), (lo, hi, lx, hx, t)


def test_number_range_integral_bounds():
    regex, exact = number_range(0, 100)
    assert exact
    for t in ["0", "100", "100.0", "100.000", "99.5", "0.0", "-0.0", "1e-05", "5e+01", "1e+02", "0.001", "7",
              "1e-0", "5.5E+00", "1E-00", "9.99e1"]:
        assert re.fullmatch(regex, t), t
    for t in ["100.5", "101", "-1", "-0.5", "1e+20", "1.01e+02", "-1e-05", "1000", "00", "+1", ".5", "1.", ""]:
        assert not re.fullmatch(regex, t), t


def test_number_range_exclusive_and_negative_bounds():
    regex, exact = number_range(-1.5, 2.25, True, True)
    assert exact
    for v in [-1.4999, -1, 0, 2, 2.2499, 1e-07, -1e-07]:
        assert fm(regex, v), v
    for v in [-1.5, 2.25, -2, 3, 1e+20, -1e+20]:
        assert not fm(regex, v), v
    regex, _ = number_range(None, -1e-05)
    assert fm(regex, -1e-05) and fm(regex, -3) and not fm(regex, -9e-06) and not fm(regex, 0.0)


def test_number_range_no_minus_sign_when_nonnegative_except_negative_zero():
    regex, _ = number_range(0, None)
    assert fm(regex, -0.0) and fm(regex, 0) and fm(regex, 1e+300) and fm(regex, 5e-324)
    assert not any(fm(regex, v) for v in (-1, -1e-300, -5e-324))
    regex, _ = number_range(0, None, lo_exclusive=True)
    assert not fm(regex, 0) and not fm(regex, -0.0) and fm(regex, 5e-324)


def test_number_range_unbounded_accepts_every_json_number():
    regex, exact = number_range(None, None)
    assert exact
    for t in ["0", "-0", "1E5", "-0.0e-0", "12.5e+3", "1e400"]:
        assert re.fullmatch(regex, t), t
    for t in ["01", "+1", ".5", "1.", "e5", "NaN", "Infinity"]:
        assert not re.fullmatch(regex, t), t


def test_number_range_int64_bounds_stay_exact():
    lo, hi = -2**63, 2**63 - 1
    regex, exact = number_range(lo, hi)
    assert exact
    for v in [lo, hi, float(lo), float(hi), lo - 1, hi + 1, 2**62, float(2**62), 9223372036854775000]:
        assert fm(regex, v) == _inside(v, lo, hi, False, False), v


def test_number_range_rejects_bad_bounds():
    for args in [(2, 1), (1.5, 1.5, True, False), (float("nan"), None), (None, float("-inf"))]:
        with pytest.raises(ValueError):
            number_range(*args)
    assert number_range(float("-inf"), float("inf"))[1]


# ------------------------------------------------------------------------------------------------ strings
@FAST
@given(s=st.text(max_size=12), lo=st.integers(0, 6), span=st.none() | st.integers(0, 6))
def test_string_regex_counts_characters(s, lo, span):
    hi = None if span is None else lo + span
    assert fm(string_regex(lo, hi), s) == (lo <= len(s) and (hi is None or len(s) <= hi)), (s, lo, hi)


def test_any_string_accepts_every_json_escape_and_rejects_bad_json():
    regex = any_string_regex()
    assert regex == string_regex()
    for t in ['""', r'"\u00e9\/\"\\\b\f\n\r\t"', '"\U0001F600 é"', r'"\ud83d\ude00"', '"\x7f"']:
        assert re.fullmatch(regex, t), t
    for t in ['"\n"', '"a"b"', '"\\"', r'"\x41"', r'"\u12"', "abc", '"abc', '"\x00"']:
        assert not re.fullmatch(regex, t), t
    assert re.fullmatch(string_regex(2, 2), r'"\n\u0041"') and not re.fullmatch(string_regex(3), r'"\n\u0041"')
    for bad in [(-1, None), (3, 2)]:
        with pytest.raises(ValueError):
            string_regex(*bad)


# ------------------------------------------------------------------------------------------------ formats
FORMATS = ["date", "time", "date-time", "email", "uuid", "uri", "ipv4", "ipv6", "hostname"]


def _leap_second(s: str) -> bool:
    return ":60" in s


def _hostname_beyond_regex(s: str) -> bool:  # total length and punycode (IDNA) rules are not expressed
    return len(s) > 253 or "xn--" in s.lower()


KNOWN_OVER_ACCEPT = {"time": _leap_second, "date-time": _leap_second, "hostname": _hostname_beyond_regex}


@needs_data
@pytest.mark.parametrize("fmt", FORMATS)
def test_format_against_json_schema_test_suite(fmt):
    regex = format_regex(fmt)
    rejected_valid, accepted_invalid = [], []
    for group in json.loads((JSTS / "optional" / "format" / f"{fmt}.json").read_text()):
        for case in group["tests"]:
            if not isinstance(case["data"], str):
                continue
            got = fm(regex, case["data"])
            if case["valid"] and not got:
                rejected_valid.append(case["data"])
            if got and not case["valid"]:
                accepted_invalid.append(case["data"])
    assert rejected_valid == []
    allowed = KNOWN_OVER_ACCEPT.get(fmt, lambda s: False)
    assert [s for s in accepted_invalid if not allowed(s)] == []


@FAST
@given(d=st.dates(), t=st.times(), tz=st.integers(-23 * 60 - 59, 23 * 60 + 59))
def test_formats_accept_python_isoformat(d, t, tz):
    offset = datetime.timezone(datetime.timedelta(minutes=tz))
    dt = datetime.datetime.combine(d, t, tzinfo=offset)
    assert fm(format_regex("date"), d.isoformat())
    assert fm(format_regex("date-time"), dt.isoformat())
    assert fm(format_regex("date-time"), dt.isoformat().replace("+00:00", "Z").lower())
    assert fm(format_regex("time"), dt.timetz().isoformat())


@FAST
@given(v4=st.ip_addresses(v=4), v6=st.ip_addresses(v=6), u=st.uuids())
def test_formats_accept_python_ip_and_uuid_spellings(v4, v6, u):
    assert fm(format_regex("ipv4"), str(v4))
    assert fm(format_regex("ipv6"), str(v6)) and fm(format_regex("ipv6"), v6.exploded)
    assert fm(format_regex("ipv6"), f"::ffff:{v4}") and fm(format_regex("ipv6"), f"64:ff9b::{v4}")
    assert fm(format_regex("uuid"), str(u)) and fm(format_regex("uuid"), str(u).upper())


def test_format_details():
    date = format_regex("date")
    assert fm(date, "2000-02-29") and fm(date, "2024-02-29") and fm(date, "1600-02-29")
    assert not any(fm(date, s) for s in ("1900-02-29", "2023-02-29", "2023-04-31", "2023-13-01", "2023-1-01"))
    email = format_regex("email")
    assert fm(email, '"a\\"b c"@example.com') and fm(email, "x@[IPv6:2001:db8::1]")
    assert not fm(email, "a b@example.com") and not fm(email, "a@b@c")
    assert fm(format_regex("uri"), "https://example.com/a/b?c=d&e=%20#f") and not fm(format_regex("uri"), "/rel")
    assert fm(format_regex("hostname"), "a" * 63 + ".b") and not fm(format_regex("hostname"), "a" * 64 + ".b")
    assert fm(format_regex("uuid"), str(uuid.UUID(int=0)))
    assert format_regex("no-such-format") is None


# ------------------------------------------------------------------------------------------------ patterns
def _ecma_agrees_with_python(s: str) -> bool:
    """Strings on which Python's `re` and ECMA-262 read \\d \\w \\s . $ the same way."""
    return not any(c in "\n\r\x1c\x1d\x1e\x1f\x85\u2028\u2029\ufeff"
                   or not c.isascii() and (c.isalnum() or c.isspace() or c == "_") for c in s)


def _resolve(root, ref):
    node = root
    for part in ref.lstrip("#").split("/"):
        if not part:
            continue
        part = part.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


def _pattern_instances(root, schema, inst, out, depth=0):
    """(pattern, string) pairs: every string instance a `pattern` (or a patternProperties key) meets."""
    if depth > 30 or not isinstance(schema, dict):
        return
    if isinstance(schema.get("$ref"), str) and schema["$ref"].startswith("#"):
        _pattern_instances(root, _resolve(root, schema["$ref"]), inst, out, depth + 1)
    if isinstance(schema.get("pattern"), str) and isinstance(inst, str):
        out.setdefault(schema["pattern"], set()).add(inst)
    for kw in ("allOf", "anyOf", "oneOf"):
        for sub in schema.get(kw) or []:
            _pattern_instances(root, sub, inst, out, depth + 1)
    if isinstance(inst, dict):
        props = schema.get("properties") or {}
        pattern_props = schema.get("patternProperties") or {}
        for key, value in inst.items():
            if key in props:
                _pattern_instances(root, props[key], value, out, depth + 1)
            for pat, sub in pattern_props.items():
                out.setdefault(pat, set()).add(key)
                try:
                    if re.search(pat, key):
                        _pattern_instances(root, sub, value, out, depth + 1)
                except re.error:
                    pass
            if isinstance(schema.get("additionalProperties"), dict):
                _pattern_instances(root, schema["additionalProperties"], value, out, depth + 1)
    if isinstance(inst, list):
        prefix = schema.get("prefixItems") or []
        for i, value in enumerate(inst):
            sub = prefix[i] if i < len(prefix) else schema.get("items")
            _pattern_instances(root, sub, value, out, depth + 1)


def _all_patterns(schema, out):
    if isinstance(schema, dict):
        for k, v in schema.items():
            if k == "pattern" and isinstance(v, str):
                out.add(v)
            if k == "patternProperties" and isinstance(v, dict):
                out.update(v)
            _all_patterns(v, out)
    elif isinstance(schema, list):
        for v in schema:
            _all_patterns(v, out)


@pytest.fixture(scope="module")
def corpus():
    """Patterns of the JSON-Schema-Test-Suite pattern files and of maskbench, with the strings they meet."""
    if not JSTS.is_dir():
        pytest.skip("shared/data not present")
    files = [JSTS / "pattern.json", JSTS / "patternProperties.json", JSTS / "optional" / "ecmascript-regex.json"]
    files += sorted(Path(p) for p in glob.glob(str(DATA / "maskbench" / "*.json")))
    patterns, instances = set(), {}
    for path in files:
        doc = json.loads(path.read_text())
        for group in doc if isinstance(doc, list) else [doc]:
            _all_patterns(group["schema"], patterns)
            for case in group["tests"]:
                _pattern_instances(group["schema"], group["schema"], case["data"], instances)
    return patterns, instances


def test_pattern_corpus_no_false_rejects_and_exact_agreement(corpus):
    patterns, instances = corpus
    translated = exact_count = pairs = 0
    unsupported = []
    for pat in sorted(patterns):
        try:
            regex, exact = pattern_regex(pat)
        except UnsupportedPattern:
            unsupported.append(pat)
            continue
        translated += 1
        exact_count += exact
        compiled = re.compile(regex)
        try:
            python = re.compile(pat)
        except re.error:  # \p{..}: checked against the suite's labels instead
            continue
        for s in instances.get(pat, ()):
            if not _ecma_agrees_with_python(s):
                continue
            pairs += 1
            want = python.search(s) is not None
            got = compiled.fullmatch(text(s)) is not None
            assert got or not want, ("false reject", pat, s)
            assert got == want or not exact, ("exact but disagrees", pat, s)
    assert translated >= 0.98 * len(patterns) and pairs > 1000, (translated, len(patterns), pairs, unsupported)


@needs_data
def test_pattern_ecmascript_semantics_against_suite_labels():
    checked = 0
    for name in ("optional/ecmascript-regex.json", "pattern.json", "patternProperties.json"):
        for group in json.loads((JSTS / name).read_text()):
            schema = group["schema"]
            pats = [schema["pattern"]] if "pattern" in schema else []
            key_pats = list(schema.get("patternProperties", {})) if schema.get("additionalProperties") is False else []
            try:
                regexes = [pattern_regex(p)[0] for p in pats + key_pats]
            except UnsupportedPattern:
                continue
            for case in group["tests"]:
                data = case["data"]
                if pats and isinstance(data, str):
                    assert fm(regexes[0], data) == case["valid"], (group["description"], case["description"])
                    checked += 1
                elif key_pats and isinstance(data, dict):
                    ok = all(any(fm(r, k) for r in regexes) for k in data)
                    assert ok == case["valid"], (group["description"], case["description"])
                    checked += 1
    assert checked > 50


ALPHABET = st.sampled_from(list('ab c"\\/\n\t\x01é\U0001F600-0_.'))
SEARCH_PATTERNS = ["a+", "^ab*c$", "x|^y", "[^a-c]{2,3}", '"', "\\\\", "\n", "^[\\s]+$", ".b.", "^(a|b)*$",
                   "(?:ab){2}", "^$", "é+", '["\\\\/]', "[\\x00-\\x1f]", "a{2,}$", '^[^"]*$', "\\d\\w", "\U0001F600.",
                   "^(a|$)", "^\\D\\W?", "[.-]", "(^a|b$)", "\\/", "^[\\t\\n]", "c(?:$|a)", "(?:ab)*c.+",
                   "a*b{2,}", ".*\"+.*"]


@FAST
@given(s=st.lists(ALPHABET, max_size=8).map("".join))
def test_pattern_search_semantics_on_random_strings(s):
    for pat in SEARCH_PATTERNS:
        regex, exact = pattern_regex(pat)
        assert exact
        # ECMA: `$` is the end of input (Python's also matches before a final \n); \d \w \s are ASCII here.
        oracle = pat.replace("$", "\\Z")
        assert fm(regex, s) == (re.search(oracle, s, re.ASCII) is not None), (pat, s, regex)


def test_pattern_escapes_and_any_character():
    assert fm(pattern_regex('^a"b\\\\c\n$')[0], 'a"b\\c\n')
    dot = pattern_regex("^.$")[0]
    assert all(fm(dot, c) for c in ['"', "\\", "\x01", "\t", "é", "\U0001F600", "/"])
    assert not any(fm(dot, c) for c in ["\n", "\r", "\u2028", "ab", ""])
    neg = pattern_regex("^[^a]$")[0]
    assert all(fm(neg, c) for c in ['"', "\\", "\x01", "\n", "b"]) and not fm(neg, "a")
    assert not re.fullmatch(neg, '"\\u0061"')  # an escape spelling of a forbidden character stays forbidden
    assert fm(pattern_regex('^["\\\\]+$')[0], '"\\"') and not fm(pattern_regex('^["\\\\]+$')[0], "a")


def test_pattern_ecma_specific_syntax():
    assert fm(pattern_regex("^(?<year>\\d{4})-(?<m>\\d\\d)$")[0], "2024-05")
    assert fm(pattern_regex("^\\cC$")[0], "\x03") and not fm(pattern_regex("^\\cC$")[0], "cC")
    assert fm(pattern_regex("^x{,3}$")[0], "x{,3}") and not fm(pattern_regex("^x{,3}$")[0], "xx")
    assert fm(pattern_regex("^[\\w-.]+$")[0], "a-b.c")
    letters = pattern_regex("^\\p{L}+$")[0]
    assert fm(letters, "école") and fm(letters, "Ωmega") and not fm(letters, "a1")
    assert fm(pattern_regex("^\\P{L}$")[0], "1") and not fm(pattern_regex("^\\P{L}$")[0], "é")
    assert fm(pattern_regex("^\\d+$")[0], "42") and not fm(pattern_regex("^\\d+$")[0], "٤٢")
    assert fm(pattern_regex("^\\s$")[0], "\ufeff") and not fm(pattern_regex("^\\s$")[0], "\x1f")


def test_unanchored_sides_do_not_backtrack_quadratically():
    for pat in [".*:.*", "(.+/)?.+:.+", "^.*x"]:
        regex = re.compile(pattern_regex(pat)[0])
        start = time.perf_counter()
        assert not regex.fullmatch(text("y" * 20000))
        assert time.perf_counter() - start < 0.5, pat


def test_word_boundary_is_widened_not_exact():
    regex, exact = pattern_regex("\\bfoo\\b")
    assert not exact
    assert fm(regex, "a foo b") and fm(regex, "foo") and not fm(regex, "fo o")


@pytest.mark.parametrize("pat", ["(?=a)b", "a(?!b)", "(?<=a)b", "(?<!a)b", "(a)\\1", "(?<n>a)\\k<n>", "(?i)abc",
                                 "(?i:a)b", "a*+", "\\p{NoSuchProperty}", "[", "(?P=x)", "a)", "\\A", "/^a$/",
                                 "[]", "(?(1)a|b)"])
def test_unsupported_patterns_raise(pat):
    with pytest.raises(UnsupportedPattern):
        pattern_regex(pat)
    assert issubclass(UnsupportedPattern, ValueError)


# ------------------------------------------------------------------------------------------------ engines
def test_generated_regexes_compile_in_llguidance_lark_and_re(corpus):
    patterns, _ = corpus
    regexes = [string_regex(), string_regex(3, 7), string_regex(0, 10000), string_regex(1)]
    regexes += [format_regex(f) for f in FORMATS]
    regexes += [int_range(lo, hi) for lo, hi in [(0, 100), (-7, None), (None, 10**18), (-2**63, 2**63 - 1)]]
    regexes += [number_range(lo, hi, lx, hx)[0] for lo, hi, lx, hx in
                [(0, 100, False, False), (0.5, 99.99, True, False), (-2**63, 2**63 - 1, False, False),
                 (1e-05, 1e+20, False, True), (None, -3.25, False, True), (1e300, None, True, False)]]
    for pat in sorted(patterns)[::3] + SEARCH_PATTERNS + ["^\\p{L}+$", "\\bx"]:
        try:
            regexes.append(pattern_regex(pat)[0])
        except UnsupportedPattern:
            pass
    for regex in regexes:
        assert_engines_accept(regex)


def test_llguidance_matches_like_python():
    cases = [
        (int_range(-100, 250), ["-100", "-101", "0", "250", "251", "-0", "07"]),
        (number_range(0, 100)[0], ["100", "100.0", "99.5", "100.5", "1e-05", "-0.0", "-1", "1e+02"]),
        (string_regex(1, 3), ['""', '"a"', '"\\n\\u0041é"', '"abcd"']),
        (format_regex("ipv6"), ['"::1"', '"1::2:192.168.0.1"', '"1:2:3:4:5:6:7"', '"::ffff:192.168.0.01"']),
        (format_regex("date-time"), ['"2024-02-29T23:59:60Z"', '"2023-02-29T00:00:00Z"', '"2024-01-01t00:00:00z"']),
        (pattern_regex('^[^"]\\d+$')[0], ['"a12"', '"\\"12"', '"\\u000112"', '"a"']),
        (pattern_regex("é.")[0], ['"xéy"', '"é"', '"é\\n"', '"é\\""']),
    ]
    for regex, texts in cases:
        for t in texts:
            assert llg_fullmatch(regex, t) == (re.fullmatch(regex, t) is not None), (regex, t)
