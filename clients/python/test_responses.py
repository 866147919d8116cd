"""The openai SDK's Responses API and the OpenAI Agents SDK against the proxy
(the Responses API served from Gemini), with only base URL and key changed."""
import asyncio
import json
import urllib.request

import agents
import openai
import pytest

from conftest import POOL_KEYS, PROXY_KEY, assert_upstream_saw_only_pool_keys

GEMINI_3 = "gemini-3-pro-preview"
# Codex's model name maps to a Gemini one by the default aliases.
CODEX = "gpt-5-codex"
CODEX_GEMINI = "gemini-3-flash-preview"
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}


@pytest.fixture
def oai(stack):
    return openai.OpenAI(base_url=stack["url"] + "/v1", api_key=PROXY_KEY, max_retries=0)


def upstream_bodies(fake, action):
    return [r["body"] for r in fake.requests() if r["path"].endswith(":" + action)]


def test_responses_plain_on_an_aliased_model(oai, fake):
    r = oai.responses.create(model=CODEX, instructions="Be brief.", input="hi")
    assert r.output_text == f"Hello from the fake {CODEX_GEMINI}."
    assert r.model == CODEX and r.status == "completed" and r.object == "response"
    assert r.usage.input_tokens > 0 and r.usage.output_tokens > 0 and r.usage.total_tokens > 0
    [body] = upstream_bodies(fake, "generateContent")
    assert body["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert_upstream_saw_only_pool_keys(fake, f"/v1beta/models/{CODEX_GEMINI}:generateContent")


def test_responses_streamed(oai, fake):
    with oai.responses.stream(model="gemini-2.5-flash", input=[{"role": "user", "content": "hi"}]) as stream:
        events = [e.type for e in stream]
        final = stream.get_final_response()
    assert events[:2] == ["response.created", "response.in_progress"] and events[-1] == "response.completed"
    assert events.count("response.output_text.delta") == 3
    assert final.output_text == "chunk 0 chunk 1 chunk 2 "
    assert final.usage.total_tokens > 0
    assert_upstream_saw_only_pool_keys(fake, "/v1beta/models/gemini-2.5-flash:streamGenerateContent")


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_responses_function_calls_over_two_turns_on_gemini_3(oai, fake, stream):
    conversation = [{"role": "user", "content": 'Weather? CALL get_weather {"city": "Paris"}'}]

    def ask():
        if not stream:
            return oai.responses.create(model=GEMINI_3, tools=[WEATHER], input=conversation, store=False)
        with oai.responses.stream(model=GEMINI_3, tools=[WEATHER], input=conversation, store=False) as s:
            for _ in s:
                pass
            return s.get_final_response()

    first = ask()
    [call] = [i for i in first.output if i.type == "function_call"]
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Paris"}
    # The SDK's own items go back as they came (as Codex sends them): the
    # signature with them.
    conversation += [i.model_dump(exclude_none=True) for i in first.output]
    conversation.append({"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 21 C"})
    second = ask()
    assert "sunny, 21 C" in second.output_text
    bodies = upstream_bodies(fake, "streamGenerateContent" if stream else "generateContent")
    sent_call = bodies[-1]["contents"][1]["parts"][0]
    assert sent_call["functionCall"] == {"name": "get_weather", "args": {"city": "Paris"}}
    # Google's signature, verbatim (the fake refuses one it did not issue).
    assert sent_call["thoughtSignature"].startswith("EtYDCtMDAdHtim") and sent_call["thoughtSignature"].endswith("=")
    assert bodies[-1]["contents"][2]["parts"][0]["functionResponse"]["response"] == {"output": "sunny, 21 C"}
    assert_upstream_saw_only_pool_keys(fake, f"/v1beta/models/{GEMINI_3}:")


def test_responses_reasoning_and_structured_output(oai, fake):
    r = oai.responses.create(
        model=GEMINI_3, input="Classify: a cat.", reasoning={"effort": "low", "summary": "auto"},
        include=["reasoning.encrypted_content"],
        text={"format": {"type": "json_schema", "name": "kind", "strict": True,
                         "schema": {"type": "object", "properties": {"kind": {"type": "string"}},
                                    "required": ["kind"], "additionalProperties": False}}},
    )
    assert [i.type for i in r.output] == ["reasoning", "message"]
    assert r.output[0].summary[0].text == "Thinking it over."
    [body] = upstream_bodies(fake, "generateContent")
    config = body["generationConfig"]
    assert config["thinkingConfig"] == {"includeThoughts": True, "thinkingLevel": "low"}
    assert config["responseMimeType"] == "application/json"
    assert config["responseJsonSchema"]["required"] == ["kind"]


def test_responses_refuses_what_it_cannot_keep(oai, fake):
    with pytest.raises(openai.BadRequestError) as e:
        oai.responses.create(model="gemini-2.5-flash", input="more", previous_response_id="resp_123")
    assert "whole conversation" in e.value.message
    with pytest.raises(openai.NotFoundError):
        oai.responses.retrieve("resp_123")
    assert fake.requests() == []


def test_responses_errors(stack, fake):
    wrong = openai.OpenAI(base_url=stack["url"] + "/v1", api_key="AQ.notTheProxyKey0123456789abcdef", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.responses.create(model="gemini-2.5-flash", input="hi")
    # Every key out of quota for the day, on a model no other test uses.
    body = json.dumps({"key": "*", "behavior": "per-day"}).encode()
    urllib.request.urlopen(urllib.request.Request(fake.origin + "/_fake/behavior", data=body, method="POST")).read()
    oai = openai.OpenAI(base_url=stack["url"] + "/v1", api_key=PROXY_KEY, max_retries=0)
    with pytest.raises(openai.RateLimitError) as e:
        oai.responses.create(model="gemini-2.0-flash-responses-quota", input="hi")
    assert e.value.response.headers.get("retry-after")
    assert len(fake.requests()) == min(len(POOL_KEYS), 5), "each key tried once, five at most"


def test_an_agents_sdk_agent_runs_its_tool_and_answers(stack, fake):
    calls = []

    @agents.function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        calls.append(city)
        return f"sunny in {city}"

    client = openai.AsyncOpenAI(base_url=stack["url"] + "/v1", api_key=PROXY_KEY, max_retries=0)
    model = agents.OpenAIResponsesModel(model=GEMINI_3, openai_client=client)
    agent = agents.Agent(name="weather", instructions="Use the tool.", tools=[get_weather], model=model)
    agents.set_tracing_disabled(True)
    result = asyncio.run(agents.Runner.run(agent, 'CALL get_weather {"city": "Lima"}'))
    assert calls == ["Lima"]
    assert "sunny in Lima" in result.final_output
    assert_upstream_saw_only_pool_keys(fake, f"/v1beta/models/{GEMINI_3}:")
