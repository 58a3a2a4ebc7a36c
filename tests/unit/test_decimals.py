"""``fhir_server.decimals``: JSON numbers read and written back exactly as they were given."""

from __future__ import annotations

import copy
import math
import pickle

import orjson
from hypothesis import given
from hypothesis import strategies as st

from fhir_server import decimals
from fhir_server.decimals import ExactDecimal

_DIGITS = st.text("0123456789", min_size=1, max_size=25)
_NUMBER = st.builds(
    lambda sign, whole, fraction, exponent: (
        sign + (whole.lstrip("0") or "0") + (f".{fraction}" if fraction else "")
        + (f"E{exponent}" if exponent is not None else "")),
    st.sampled_from(["", "-"]), _DIGITS, st.one_of(st.just(""), _DIGITS),
    st.one_of(st.none(), st.integers(-300, 300)),
).filter(lambda text: math.isfinite(float(text)))


@given(st.lists(_NUMBER, min_size=1, max_size=6))
def test_every_number_is_written_back_as_it_was_read(texts: list[str]) -> None:
    body = ('{"a":[' + ", ".join(texts) + '],"b":{"c":' + texts[0] + "}}").encode()
    expected = body.replace(b", ", b",")
    assert decimals.dumps(decimals.loads(body)) == expected


def test_plain_floats_and_integers_stay_plain() -> None:
    value = decimals.loads(b'{"a":72.0,"b":[1,2.5,-3],"c":"12:30:00.000+07:00"}')
    assert type(value["a"]) is float
    assert [type(v) for v in value["b"]] == [int, float, int]
    assert not decimals.has_inexact_number(b'{"t":"08:30:00.000+07:00","x":[1,2,3.0]}')


def test_numbers_after_commas_in_arrays_are_all_seen() -> None:
    assert decimals.has_inexact_number(b"[1.5,2.50]".join([b'{"a":', b"}"]))
    assert decimals.has_inexact_number(b'{"a": [ 1 , 2.0e1 ]}')


def test_an_exact_decimal_is_a_float_equal_only_to_the_same_text() -> None:
    value = ExactDecimal("1.50")
    assert value == ExactDecimal("1.50")
    assert value != 1.5
    assert value != ExactDecimal("1.500")
    assert 1 < value < 2
    assert float(value) == 1.5
    assert str(value) == repr(value) == "1.50"
    assert pickle.loads(pickle.dumps(value)).text == "1.50"
    assert copy.deepcopy({"v": value})["v"].text == "1.50"
    assert orjson.loads(decimals.dumps({"v": value}, orjson.OPT_INDENT_2)) == {"v": 1.5}


def test_text_that_looks_like_a_number_inside_strings_is_no_number() -> None:
    body = b'{"a":"included],","b":"x 1.50]","c":"dede+1}","d":["1e5]"],"e":1.5}'
    value = decimals.loads(body)
    assert value["a"] == "included]," and type(value["e"]) is float
    assert decimals.dumps(value) == body


@given(st.text(alphabet="0123456789.eEdD+-:,[]} ", max_size=40))
def test_any_text_in_a_string_leaves_the_parse_alone(text: str) -> None:
    body = orjson.dumps({"s": text, "n": [1.25, 3]})
    assert decimals.loads(body) == {"s": text, "n": [1.25, 3]}


def test_a_number_like_text_in_a_string_beside_a_real_decimal() -> None:
    body = b'{"t":"12:30.50]","v":1.50,"w":[2.50,"a,1.50}"]}'
    value = decimals.loads(body)
    assert value["t"] == "12:30.50]" and value["w"][1] == "a,1.50}"
    assert isinstance(value["v"], ExactDecimal) and value["v"].text == "1.50"
    assert decimals.dumps(value) == body
