"""The subscriptions API's rules: bearer tokens compared whole, secrets never shown, a proposed
subscription checked as the file's are."""

from __future__ import annotations

import base64

import orjson
import pytest

from agents.webhook_api import authorised, listed, proposed

SECRET = "whsec_" + base64.b64encode(b"a receiver's secret, 32 bytes...").decode()


def test_only_a_bearer_token_of_the_settings_is_let_in():
    tokens = ("t0k3n-one", "t0k3n-two")
    assert authorised("Bearer t0k3n-two", tokens) and authorised("bearer t0k3n-one", tokens)
    for header in ("", "Bearer", "Bearer ", "Basic t0k3n-one", "Bearer t0k3n", "Bearer t0k3n-one-more", "t0k3n-one"):
        assert not authorised(header, tokens), header
    assert not authorised("Bearer anything", ())  # no tokens set: the API is closed


def test_a_subscription_is_shown_without_its_secrets():
    sub = proposed(orjson.dumps({"subscription_id": "ops", "url": "https://ops.example.gov/hook", "secrets": [SECRET]}))
    view = listed(sub, "api")
    assert view["secrets"] == 1 and SECRET not in orjson.dumps(view).decode() and view["source"] == "api"


@pytest.mark.parametrize(("body", "why"), [
    (b"{not json", "not JSON"),
    (b'{"subscription_id": "x", "url": "ftp://a/b", "secrets": []}', r"http\(s\)"),
    (b'{"subscription_id": "x", "url": "https://10.0.0.5/h", "secrets": ["whsec_AAAA"]}', "private"),
    (b'{"url": "https://ops.example.gov/h"}', "subscription_id"),
])
def test_a_proposed_subscription_is_checked_as_the_files_are(body, why):
    with pytest.raises(ValueError, match=why):
        proposed(body)


def test_the_path_names_the_subscription_a_put_changes():
    body = orjson.dumps({"subscription_id": "other", "url": "https://ops.example.gov/hook", "secrets": [SECRET]})
    assert proposed(body, "ops").subscription_id == "ops"
