import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autoprov.mac import InvalidMacError, colon_form, normalize

SPELLINGS = ["00:15:65:AA:BB:CC", "00-15-65-aa-bb-cc", "0015.65aa.bbcc", "001565AABBCC",
             " 001565aabbcc ", "001565aabbcc\n"]


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_every_common_spelling_is_stored_as_twelve_lower_hex_digits(spelling: str) -> None:
    assert normalize(spelling) == "001565aabbcc"
    assert colon_form(spelling) == "00:15:65:aa:bb:cc"


@pytest.mark.parametrize("bad", ["", "00:15:65:aa:bb", "00:15:65:aa:bb:cc:dd", "0015-65aa-bbcc",
                                 "00:15-65:aa:bb:cc", "gg1565aabbcc", "../etc/passwd"])
def test_malformed_mac_is_refused_with_a_clear_message(bad: str) -> None:
    with pytest.raises(InvalidMacError, match="invalid MAC address"):
        normalize(bad)


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_sql_normalises_the_same_spellings(conn: psycopg.Connection[tuple[str]],
                                          spelling: str) -> None:
    row = conn.execute("SELECT autoprov.normalize_mac(%s)", (spelling,)).fetchone()
    assert row == ("001565aabbcc",)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(alphabet="0123456789abcdefABCDEF:-. xg\n", max_size=20))
def test_sql_and_python_agree_on_any_input(conn: psycopg.Connection[tuple[str]],
                                          text: str) -> None:
    try:
        expected: str | None = normalize(text)
    except InvalidMacError:
        expected = None
    try:
        row = conn.execute("SELECT autoprov.normalize_mac(%s)", (text,)).fetchone()
        got = row[0] if row else None
    except psycopg.errors.InvalidParameterValue:
        got = None
    assert got == expected
