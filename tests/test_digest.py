"""The proxy's answer to a phone's digest challenge, checked as a phone checks it."""

import pytest

from kemi import digest
from tests import sipdigest

URI = "sip:alice@192.0.2.5:5060"


@pytest.mark.parametrize("challenge", [
    'Digest realm="example.test", nonce="abc123", algorithm=MD5, qop="auth"',
    'Digest realm="example.test", nonce="abc123", qop="auth,auth-int", opaque="xyz"',
    'Digest realm="example.test", nonce="abc123"',
])
def test_authorization_is_what_the_phone_expects(challenge: str) -> None:
    value = digest.authorization(challenge, "NOTIFY", URI, "alice", "s3cret")
    assert sipdigest.valid(value, "NOTIFY", "alice", "s3cret")
    assert not sipdigest.valid(value, "NOTIFY", "alice", "other")
    assert "s3cret" not in value


def test_opaque_is_echoed() -> None:
    value = digest.authorization('Digest realm="r", nonce="n", opaque="o1"', "NOTIFY", URI,
                                 "alice", "pw")
    assert 'opaque="o1"' in value


@pytest.mark.parametrize("challenge", [
    'Basic realm="x"',
    'Digest realm="x", nonce="n", algorithm=MD5-sess-unknown',
    'Digest realm="x", nonce="n", qop="auth-int"',
    'Digest realm="x"',
])
def test_challenges_it_cannot_answer_are_refused(challenge: str) -> None:
    with pytest.raises(digest.UnsupportedChallengeError):
        digest.authorization(challenge, "NOTIFY", URI, "alice", "pw")
