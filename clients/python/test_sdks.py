"""The official Python SDKs, with only base URL and key changed."""
import base64
import struct

import pytest
from google import genai
from google.genai import types
import openai

from conftest import PROXY_KEY, assert_upstream_saw_only_pool_keys

MODEL = "gemini-2.5-flash"


@pytest.fixture
def oai(stack):
    return openai.OpenAI(base_url=stack["url"] + "/v1", api_key=PROXY_KEY, max_retries=0)


def test_openai_chat(oai, fake):
    r = oai.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    assert r.choices[0].message.content == f"Hello from the fake {MODEL}."
    assert_upstream_saw_only_pool_keys(fake, "/v1beta/openai/chat/completions")


def test_openai_chat_stream(oai, fake):
    chunks = list(oai.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "chunk 0 chunk 1 chunk 2 "
    assert_upstream_saw_only_pool_keys(fake, "/v1beta/openai/chat/completions")


def test_openai_embeddings_float_and_base64(oai, fake):
    r = oai.embeddings.create(model="gemini-embedding-001", input=["a", "b"], encoding_format="float")
    assert len(r.data) == 2 and r.data[0].embedding[1] == -0.5
    r = oai.embeddings.create(model="gemini-embedding-001", input="a")  # the SDK asks for base64 and decodes it
    assert r.data[0].embedding[1] == -0.5
    assert_upstream_saw_only_pool_keys(fake, "/v1beta/openai/embeddings")


def test_openai_models(oai, fake):
    ids = [m.id for m in oai.models.list()]
    assert "models/gemini-2.5-flash" in ids
    assert_upstream_saw_only_pool_keys(fake, "/v1beta/openai/models")


@pytest.fixture(params=[None, "v1beta"], ids=["sdk-default-version", "v1beta"])
def gclient(request, stack):
    opts = {"base_url": stack["url"]}
    if request.param:
        opts["api_version"] = request.param
    return genai.Client(api_key=PROXY_KEY, http_options=types.HttpOptions(**opts))


def test_genai_generate(gclient, fake):
    r = gclient.models.generate_content(model=MODEL, contents="hi")
    assert r.text == f"Hello from the fake {MODEL}."
    assert_upstream_saw_only_pool_keys(fake, "/v1beta/models/")


def test_genai_generate_stream(gclient, fake):
    text = "".join(c.text or "" for c in gclient.models.generate_content_stream(model=MODEL, contents="hi"))
    assert text == "chunk 0 chunk 1 chunk 2 "
    assert_upstream_saw_only_pool_keys(fake, "/v1beta/models/")


def test_genai_count_tokens(gclient, fake):
    assert gclient.models.count_tokens(model=MODEL, contents="hi").total_tokens == 7
    assert_upstream_saw_only_pool_keys(fake, "/v1beta/models/")


def test_genai_embed(gclient, fake):
    r = gclient.models.embed_content(model="gemini-embedding-001", contents=["a", "b"])
    assert len(r.embeddings) == 2 and r.embeddings[0].values[1] == -0.5
    assert_upstream_saw_only_pool_keys(fake, "/v1beta/models/")


def test_genai_models(gclient, fake):
    names = [m.name for m in gclient.models.list()]
    assert "models/gemini-2.5-flash" in names
    assert_upstream_saw_only_pool_keys(fake, "/v1beta/models")
