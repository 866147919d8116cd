"""The anthropic SDK against the proxy's Messages API (served from Gemini),
with only base URL and key changed."""
import base64
import json
import urllib.request

import anthropic
import pytest

from conftest import POOL_KEYS, PROXY_KEY, assert_upstream_saw_only_pool_keys

# Claude Code's model names map to Gemini ones by the default aliases.
SONNET = "claude-sonnet-4-5-20250929"
SONNET_GEMINI = "gemini-3-flash-preview"
GEMINI_3 = "gemini-3-pro-preview"
WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
}
# A 1x1 PNG.
PNG = base64.b64encode(bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360f8cf000000030101009a3b5d2d"
    "0000000049454e44ae426082")).decode()


@pytest.fixture
def claude(stack):
    return anthropic.Anthropic(base_url=stack["url"], api_key=PROXY_KEY, max_retries=0)


def upstream_bodies(fake, action):
    return [r["body"] for r in fake.requests() if r["path"].endswith(":" + action)]


def test_anthropic_message_on_an_aliased_model(claude, fake):
    m = claude.messages.create(model=SONNET, max_tokens=100, messages=[{"role": "user", "content": "hi"}])
    assert m.content[0].type == "text" and m.content[0].text == f"Hello from the fake {SONNET_GEMINI}."
    assert m.model == SONNET and m.stop_reason == "end_turn" and m.role == "assistant"
    assert m.usage.input_tokens > 0 and m.usage.output_tokens > 0
    assert_upstream_saw_only_pool_keys(fake, f"/v1beta/models/{SONNET_GEMINI}:generateContent")


def test_anthropic_stream(claude, fake):
    with claude.messages.stream(model=SONNET, max_tokens=100, system="Be brief.",
                                messages=[{"role": "user", "content": "hi"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "chunk 0 chunk 1 chunk 2 "
    assert final.stop_reason == "end_turn" and final.usage.output_tokens > 0
    [body] = upstream_bodies(fake, "streamGenerateContent")
    assert body["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert_upstream_saw_only_pool_keys(fake, f"/v1beta/models/{SONNET_GEMINI}:streamGenerateContent")


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_anthropic_tools_over_two_turns_on_gemini_3(claude, fake, stream):
    messages = [{"role": "user", "content": 'Weather? CALL get_weather {"city": "Paris"}'}]

    def ask():
        if not stream:
            return claude.messages.create(model=GEMINI_3, max_tokens=500, tools=[WEATHER], messages=messages)
        with claude.messages.stream(model=GEMINI_3, max_tokens=500, tools=[WEATHER], messages=messages) as s:
            return s.get_final_message()

    first = ask()
    assert first.stop_reason == "tool_use"
    call = first.content[-1]
    assert call.type == "tool_use" and call.name == "get_weather" and call.input == {"city": "Paris"}
    # The SDK's own objects go back as they came: the signature with them.
    messages += [
        {"role": "assistant", "content": first.content},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny, 21 C"}]},
    ]
    second = ask()
    assert second.stop_reason == "end_turn"
    assert "sunny, 21 C" in second.content[0].text
    action = "streamGenerateContent" if stream else "generateContent"
    bodies = upstream_bodies(fake, action)
    sent_call = bodies[-1]["contents"][1]["parts"][0]
    assert sent_call["functionCall"] == {"name": "get_weather", "args": {"city": "Paris"}}
    # Google's signature, verbatim (the fake refuses one it did not issue).
    assert sent_call["thoughtSignature"].startswith("EtYDCtMDAdHtim") and sent_call["thoughtSignature"].endswith("=")
    assert bodies[-1]["contents"][2]["parts"][0]["functionResponse"]["response"] == {"output": "sunny, 21 C"}
    assert_upstream_saw_only_pool_keys(fake, f"/v1beta/models/{GEMINI_3}:")


def test_a_client_that_drops_the_call_id_gets_the_placeholder(claude, fake):
    first = claude.messages.create(model=GEMINI_3, max_tokens=500, tools=[WEATHER],
                                   messages=[{"role": "user", "content": 'CALL get_weather {"city": "Oslo"}'}])
    call = first.content[-1]
    rebuilt = {"type": "tool_use", "id": "toolu_01RebuiltByTheApp", "name": call.name, "input": call.input}
    second = claude.messages.create(model=GEMINI_3, max_tokens=500, tools=[WEATHER], messages=[
        {"role": "user", "content": 'CALL get_weather {"city": "Oslo"}'},
        {"role": "assistant", "content": [rebuilt]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01RebuiltByTheApp",
                                      "content": "snow", "is_error": False}]},
    ])
    assert "snow" in second.content[0].text
    sent = upstream_bodies(fake, "generateContent")[-1]["contents"][1]["parts"][0]
    assert sent["thoughtSignature"] == "skip_thought_signature_validator"


def test_anthropic_thinking_streamed(claude, fake):
    with claude.messages.stream(model=GEMINI_3, max_tokens=4000, thinking={"type": "enabled", "budget_tokens": 2048},
                                messages=[{"role": "user", "content": "think"}]) as stream:
        kinds = [e.type for e in stream]
        final = stream.get_final_message()
    assert "thinking" in kinds
    assert [b.type for b in final.content] == ["thinking", "text"]
    assert final.content[0].thinking == "Thinking it over."
    [body] = upstream_bodies(fake, "streamGenerateContent")
    assert body["generationConfig"]["thinkingConfig"] == {"includeThoughts": True, "thinkingLevel": "low"}


def test_anthropic_image(claude, fake):
    m = claude.messages.create(model=SONNET, max_tokens=100, messages=[{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "text", "text": "What is this?"},
    ]}])
    assert m.content[0].text
    [body] = upstream_bodies(fake, "generateContent")
    assert body["contents"][0]["parts"][0] == {"inlineData": {"mimeType": "image/png", "data": PNG}}


def test_anthropic_count_tokens(claude, fake):
    r = claude.messages.count_tokens(model=SONNET, messages=[{"role": "user", "content": "count me"}],
                                     tools=[WEATHER])
    assert r.input_tokens == 7
    assert_upstream_saw_only_pool_keys(fake, f"/v1beta/models/{SONNET_GEMINI}:countTokens")


def test_anthropic_errors(stack, fake):
    wrong = anthropic.Anthropic(base_url=stack["url"], api_key="AQ.notTheProxyKey0123456789abcdef", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as e:
        wrong.messages.create(model=SONNET, max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    assert e.value.body["error"]["type"] == "authentication_error"
    # Every key out of quota for the day, on a model no other test uses.
    body = json.dumps({"key": "*", "behavior": "per-day"}).encode()
    urllib.request.urlopen(urllib.request.Request(fake.origin + "/_fake/behavior", data=body, method="POST")).read()
    claude = anthropic.Anthropic(base_url=stack["url"], api_key=PROXY_KEY, max_retries=0)
    with pytest.raises(anthropic.RateLimitError) as e:
        claude.messages.create(model="gemini-2.0-flash-anthropic-quota", max_tokens=10,
                               messages=[{"role": "user", "content": "hi"}])
    assert e.value.response.headers.get("retry-after")
    assert e.value.body["error"]["type"] == "rate_limit_error"
    assert len(fake.requests()) == min(len(POOL_KEYS), 5), "each key tried once, five at most"
