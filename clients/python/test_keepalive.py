"""Slow non-streamed answers kept alive (NONSTREAM_KEEPALIVE_SECONDS): the
official SDKs parse an answer that whitespace preceded, and see a failure
after the keep-alive as an error. Needs a proxy that keeps answers alive
after a second: scripts/e2e's keep-alive phase starts one on each host."""
import http.client
import json
import os
import time
from urllib.parse import urlparse

import openai
import pytest
from google import genai
from google.genai import types

from conftest import PROXY_KEY

pytestmark = pytest.mark.skipif(
    not os.environ.get("E2E_KEEPALIVE"),
    reason="needs a proxy with NONSTREAM_KEEPALIVE_SECONDS=1 (scripts/e2e's keep-alive phase)",
)

MODEL = "gemini-2.5-pro"
# Slower than two keep-alive intervals, well within the first-byte timeout.
SLOW = "slow:2600"
SLOW_FAILURE = "slow-5xx:1600"


def behave(fake, behavior):
    fake._call("/_fake/behavior", {"key": "*", "behavior": behavior})


@pytest.fixture(autouse=True)
def behaving_again(stack):
    # The fake behaves for the next suites as it did before.
    yield
    stack["fake"].reset()


@pytest.fixture
def gclient(stack):
    return genai.Client(api_key=PROXY_KEY, http_options=types.HttpOptions(base_url=stack["url"]))


@pytest.fixture
def oai(stack):
    return openai.OpenAI(base_url=stack["url"] + "/v1", api_key=PROXY_KEY, max_retries=0)


def test_the_raw_answer_is_whitespace_then_json(stack, fake):
    behave(fake, SLOW)
    url = urlparse(stack["url"])
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    started = time.monotonic()
    conn.request("POST", f"/v1beta/models/{MODEL}:generateContent",
                 body=json.dumps({"contents": [{"parts": [{"text": "hi"}]}]}),
                 headers={"x-goog-api-key": PROXY_KEY, "content-type": "application/json"})
    r = conn.getresponse()
    head = time.monotonic() - started
    body = r.read()
    assert r.status == 200
    assert head < 2.4, f"the head waited for the answer ({head:.1f} s)"
    assert body[:1] == b" " and body.lstrip().startswith(b"{"), body[:40]


def test_google_genai_parses_a_kept_alive_answer(gclient, fake):
    behave(fake, SLOW)
    r = gclient.models.generate_content(model=MODEL, contents="hi")
    assert r.text == f"Hello from the fake {MODEL}."
    assert len(fake.requests()) == 1


def test_openai_parses_a_kept_alive_chat(oai, fake):
    behave(fake, SLOW)
    r = oai.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    assert r.choices[0].message.content == f"Hello from the fake {MODEL}."


@pytest.mark.skipif(
    os.environ.get("E2E_HOST") == "wrangler",
    reason="the Worker aborts the answer's stream, which wrangler dev's local proxy ends cleanly",
)
def test_a_failure_after_the_keep_alive_is_an_error_in_both_sdks(gclient, oai, fake):
    behave(fake, SLOW_FAILURE)
    # The answer is cut after the error's JSON: a broken transfer.
    with pytest.raises(Exception):
        gclient.models.generate_content(model=MODEL, contents="hi")
    assert len(fake.requests()) == 1, "no other key after the keep-alive"
    with pytest.raises(openai.APIError):
        oai.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
