"""X-Twilio-Signature: Twilio's documented test vector and the validator's tolerances."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from app.twilio.signature import compute_body_hash, compute_signature, url_variants, validate

TOKEN = "12345"
DOC_URL = "https://example.com/myapp.php?foo=1&bar=2"
DOC_PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Caller": "+14158675310",
    "Digits": "1234",
    "From": "+14158675310",
    "To": "+18005551212",
}
DOC_SIG = "L/OH5YylLD5NRKLltdqwSvS0BnU="


def _raw(s: str, token: str = TOKEN) -> str:
    return base64.b64encode(hmac.new(token.encode(), s.encode(), hashlib.sha1).digest()).decode()


def test_doc_vector() -> None:
    assert compute_signature(DOC_URL, DOC_PARAMS, TOKEN) == DOC_SIG
    assert validate(DOC_URL, DOC_PARAMS, DOC_SIG, TOKEN)


def test_doc_vector_string_to_sign() -> None:
    s = DOC_URL + "CallSidCA1234567890ABCDECaller+14158675310Digits1234From+14158675310To+18005551212"
    assert _raw(s) == DOC_SIG


def test_param_order_does_not_matter() -> None:
    reordered = dict(reversed(list(DOC_PARAMS.items())))
    assert compute_signature(DOC_URL, reordered, TOKEN) == DOC_SIG
    assert compute_signature(DOC_URL, list(DOC_PARAMS.items()), TOKEN) == DOC_SIG


def test_wrong_token_params_url_fail() -> None:
    assert not validate(DOC_URL, DOC_PARAMS, DOC_SIG, "54321")
    assert not validate(DOC_URL, {**DOC_PARAMS, "Digits": "1235"}, DOC_SIG, TOKEN)
    assert not validate(DOC_URL, {**DOC_PARAMS, "Extra": ""}, DOC_SIG, TOKEN)  # empty values count
    assert not validate("https://example.com/myapp.php?foo=1&bar=3", DOC_PARAMS, DOC_SIG, TOKEN)
    assert not validate("http://example.com/myapp.php?foo=1&bar=2", DOC_PARAMS, DOC_SIG, TOKEN)


@pytest.mark.parametrize("sig", [None, "", "   "])
def test_missing_signature_is_false(sig: str | None) -> None:
    assert validate(DOC_URL, DOC_PARAMS, sig, TOKEN) is False


def test_empty_token_never_validates() -> None:
    assert not validate(DOC_URL, DOC_PARAMS, compute_signature(DOC_URL, DOC_PARAMS, ""), "")


def test_case_sensitive_key_sort() -> None:
    # Code-point order: upper case sorts before lower case.
    params = {"b": "1", "B": "2", "a": "3"}
    assert compute_signature("https://h/x", params, TOKEN) == _raw("https://h/xB2a3b1")


def test_repeated_keys_values_sorted() -> None:
    multi = {"To": ["+2", "+1"], "A": "x"}
    assert compute_signature("https://h/x", multi, TOKEN) == _raw("https://h/xAxTo+1To+2")
    pairs = [("To", "+2"), ("A", "x"), ("To", "+1")]
    assert compute_signature("https://h/x", pairs, TOKEN) == _raw("https://h/xAxTo+1To+2")


def test_repeated_identical_values_both_conventions() -> None:
    pairs = [("K", "v"), ("K", "v")]
    twilio_doc = _raw("https://h/xKvKv")
    twilio_python = _raw("https://h/xKv")  # twilio-python de-duplicates values
    assert compute_signature("https://h/x", pairs, TOKEN) == twilio_doc
    assert validate("https://h/x", pairs, twilio_doc, TOKEN)
    assert validate("https://h/x", pairs, twilio_python, TOKEN)


class _MultiDict(dict):
    """Stand-in for Starlette FormData / Django QueryDict (getlist)."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        super().__init__(pairs)
        self._pairs = pairs

    def getlist(self, key: str) -> list[str]:
        return [v for k, v in self._pairs if k == key]


def test_getlist_multidict() -> None:
    md = _MultiDict([("To", "+2"), ("A", "x"), ("To", "+1")])
    assert validate("https://h/x", md, _raw("https://h/xAxTo+1To+2"), TOKEN)


def test_https_default_port_variants() -> None:
    sig_plain = compute_signature("https://example.com/voice", DOC_PARAMS, TOKEN)
    sig_port = compute_signature("https://example.com:443/voice", DOC_PARAMS, TOKEN)
    # Twilio may sign with or without :443; the server may see either.
    for url in ("https://example.com/voice", "https://example.com:443/voice"):
        assert validate(url, DOC_PARAMS, sig_plain, TOKEN)
        assert validate(url, DOC_PARAMS, sig_port, TOKEN)


def test_http_port_variants() -> None:
    sig = compute_signature("http://127.0.0.1:8000/voice", DOC_PARAMS, TOKEN)
    assert validate("http://127.0.0.1:8000/voice", DOC_PARAMS, sig, TOKEN)
    sig80 = compute_signature("http://example.com/voice", DOC_PARAMS, TOKEN)
    assert validate("http://example.com:80/voice", DOC_PARAMS, sig80, TOKEN)
    assert validate("http://example.com/voice", DOC_PARAMS, compute_signature("http://example.com:80/voice", DOC_PARAMS, TOKEN), TOKEN)
    # a different non-default port is a different URL
    assert not validate("http://127.0.0.1:8001/voice", DOC_PARAMS, sig, TOKEN)


def test_wss_handshake_no_params_and_trailing_slash() -> None:
    url = "wss://abc.example.com/media-stream"
    sig = compute_signature(url, None, TOKEN)
    assert sig == compute_signature(url, {}, TOKEN) == _raw(url)
    assert validate(url, None, sig, TOKEN)
    assert validate(url, {}, sig, TOKEN)
    # Twilio's docs: try with a trailing "/" added
    assert validate(url, None, compute_signature(url + "/", None, TOKEN), TOKEN)
    assert validate(url, None, compute_signature("wss://abc.example.com:443/media-stream", None, TOKEN), TOKEN)
    # https is not wss
    assert not validate(url, None, compute_signature("https://abc.example.com/media-stream", None, TOKEN), TOKEN)
    assert not validate(url, None, sig, "wrong-token")


def test_trailing_slash_not_added_for_http() -> None:
    sig = compute_signature("https://h.example/voice/", DOC_PARAMS, TOKEN)
    assert not validate("https://h.example/voice", DOC_PARAMS, sig, TOKEN)


def test_url_variants() -> None:
    assert url_variants("https://Ex.com/a?b=1") == ["https://Ex.com/a?b=1", "https://Ex.com:443/a?b=1"]
    assert "https://u:p@ex.com/a" in url_variants("https://u:p@ex.com:443/a")
    assert url_variants("http://[::1]:8000/v")[:2] == ["http://[::1]:8000/v", "http://[::1]/v"]


def test_body_sha256() -> None:
    body = '{"property": "value", "boolean": true}'
    digest = compute_body_hash(body)
    assert digest == hashlib.sha256(body.encode()).hexdigest()
    url = f"https://example.com/myapp?bodySHA256={digest}"
    sig = compute_signature(url, None, TOKEN)
    assert validate(url, body, sig, TOKEN)
    assert validate(url, body.encode(), sig, TOKEN)
    assert not validate(url, body + " ", sig, TOKEN)  # body tampered
    assert not validate("https://example.com/myapp", body, compute_signature("https://example.com/myapp", None, TOKEN), TOKEN)


def test_unicode_values() -> None:
    params = {"SpeechResult": "héllo wörld ✓"}
    sig = compute_signature("https://h/x", params, TOKEN)
    assert sig == _raw("https://h/xSpeechResulthéllo wörld ✓")
    assert validate("https://h/x", params, sig, TOKEN)
