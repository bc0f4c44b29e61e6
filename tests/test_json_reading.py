"""gating.limits.loads reads JSON as the stdlib does (orjson only where the two read alike), and
load_json's shortcut past the limits walk refuses exactly what the walk refuses."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gating import limits

TEXTS = [
    '{"a": 1, "b": [true, false, null], "c": {"d": "e"}}',
    '{"a": 1, "a": 2}',  # the last of duplicate keys
    "-0", "-0.0", "0.1", "1E5", "2.2250738585072011e-308", "5e-324", "1e-400", "1.7976931348623157e308",
    "1e400",  # the stdlib: inf; orjson refuses
    "123456789012345678901234567890",  # past 64 bits: the stdlib keeps the integer; orjson would make a float
    "18446744073709551616", "-9223372036854775809", "18446744073709551615", "9223372036854775807",
    '{"id": 12345678901234567890123}', '"a string with 1234567890123456789012 in it"',
    "NaN", "Infinity", "[-Infinity]",  # the stdlib reads them, orjson does not
    '"\\ud800"', '"\\ud83d\\ude00"', '"\\u0000"', '"é ✓"',
    "\ufeff{}",  # a byte order mark in text: refused
    "[1, 2,]", '{"a" 1}', "", "   ", "nul", '"\x1f"', "{} x",
    "[" * 300 + "]" * 300,
    "[" * 2000 + "]" * 2000,  # deeper than either parser goes: RecursionError, as json.loads raises it
    "[" * 1010 + "]" * 1010,  # past the stdlib's recursion limit, within orjson's 1024: still refused
    '{"a": ' + "[" * 499 + "]" * 499 + "}", '{"a": ' + "[" * 501 + "]" * 501 + "}",
]


def _outcome(fn: Any, data: Any) -> tuple[str, str]:
    try:
        return "value", repr(fn(data))
    except RecursionError:
        return "error", "RecursionError"
    except Exception as e:  # the same type and message as json.loads gives
        return "error", f"{type(e).__name__}: {e}"


@pytest.fixture(params=["orjson", "stdlib"])
def reader(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "stdlib":
        monkeypatch.setattr(limits, "_orjson", None)
    else:
        pytest.importorskip("orjson")
    return str(request.param)


@pytest.mark.parametrize("text", TEXTS)
def test_loads_gives_what_json_loads_gives_for_text(reader: str, text: str) -> None:
    assert _outcome(limits.loads, text) == _outcome(json.loads, text)


@pytest.mark.parametrize("data", [
    *(t.encode("utf-8", "surrogatepass") for t in TEXTS),
    b"\xef\xbb\xbf{\"bom\": 1}",  # bytes with a UTF-8 byte order mark: json.loads reads them
    '{"utf16": 1}'.encode("utf-16"), '{"utf32": 1}'.encode("utf-32-le"),
    b'{"bad": "\xff"}',  # not UTF-8: UnicodeDecodeError
])
def test_loads_gives_what_json_loads_gives_for_bytes(reader: str, data: bytes) -> None:
    assert _outcome(limits.loads, data) == _outcome(json.loads, data)


def test_a_value_is_of_the_same_types_as_the_stdlibs(reader: str) -> None:
    text = '{"n": 7, "f": 7.0, "big": 99999999999999999999, "l": [1.5, "x", null]}'
    got, want = limits.loads(text), json.loads(text)
    assert got == want and [type(v) for v in got.values()] == [type(v) for v in want.values()]


def _walked(doc: Any, lim: limits.Limits) -> str | None:
    try:
        limits.measure(doc, "f.json", lim)
    except limits.LimitError as e:
        return str(e)
    return None


@pytest.mark.parametrize(("text", "lim"), [
    ("[" * 100 + "]" * 100, limits.DEFAULT),
    ("[" * 101 + "]" * 101, limits.DEFAULT),
    ('{"a": "' + "[" * 500 + '"}', limits.DEFAULT),  # brackets inside a string do not nest anything
    ("[1, 2, 3, 4]", limits.Limits(max_nodes=5)),
    ("[1, 2, 3, 4, 5]", limits.Limits(max_nodes=5)),
    ("[[1], [2]]", limits.Limits(max_depth=1)),
    ('[{"a": [{"b": 1}]}]', limits.Limits(max_depth=4)),
    ('[{"a": [{"b": 1}]}]', limits.Limits(max_depth=3)),
    ("[" + ",".join(["[0]"] * 60) + "]", limits.Limits(max_nodes=100)),  # short text, many brackets
])
def test_load_json_refuses_exactly_what_the_walk_refuses(text: str, lim: limits.Limits) -> None:
    expected = _walked(json.loads(text), lim)
    for data in (text, text.encode()):
        if expected is None:
            assert limits.load_json(data, "f.json", lim) == json.loads(text)
        else:
            with pytest.raises(limits.LimitError) as e:
                limits.load_json(data, "f.json", lim)
            assert str(e.value) == expected
