// OpenAI's Responses API clients against the proxy (served from Gemini): the
// openai SDK's `responses` and the AI SDK's default `openai(…)` provider,
// with only base URL and key changed. scripts/e2e runs this against every
// host with E2E_PROXY_URL, E2E_FAKE_ORIGIN, E2E_POOL_KEYS, E2E_PROXY_KEY set.
import { test } from "node:test";
import assert from "node:assert/strict";
import OpenAI from "openai";
import { createOpenAI } from "@ai-sdk/openai";
import { generateText, streamText, tool, stepCountIs } from "ai";
import { z } from "zod";
import { env, external, skip, fresh, pathStartsWith, upstreamSawOnlyPoolKeys } from "./fake.mjs";

const GEMINI_3 = "gemini-3-pro-preview";

const client = () => new OpenAI({ baseURL: `${external}/v1`, apiKey: env.E2E_PROXY_KEY, maxRetries: 0 });
const weather = {
  type: "function",
  name: "get_weather",
  description: "The weather in a city",
  parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"], additionalProperties: false },
  strict: true,
};

test("openai responses: plain, on an aliased model", { skip }, async () => {
  await fresh();
  const r = await client().responses.create({ model: "gpt-5-codex", input: "hi", store: false });
  assert.equal(r.output_text, "Hello from the fake gemini-3-flash-preview.");
  assert.equal(r.model, "gpt-5-codex");
  assert.equal(r.status, "completed");
  await upstreamSawOnlyPoolKeys(pathStartsWith("/v1beta/models/gemini-3-flash-preview:generateContent"));
});

test("openai responses: a stream", { skip }, async () => {
  await fresh();
  const stream = client().responses.stream({ model: "gemini-2.5-flash", input: "hi" });
  let text = "";
  stream.on("response.output_text.delta", (e) => (text += e.delta));
  const final = await stream.finalResponse();
  assert.equal(text, "chunk 0 chunk 1 chunk 2 ");
  assert.equal(final.output_text, text);
  assert.ok(final.usage.total_tokens > 0);
});

test("openai responses: a function call over two turns on Gemini 3, streamed", { skip }, async () => {
  await fresh();
  const input = [{ role: "user", content: 'CALL get_weather {"city": "Lima"}' }];
  const ask = () => client().responses.stream({ model: GEMINI_3, tools: [weather], input, store: false }).finalResponse();
  const first = await ask();
  const call = first.output.find((i) => i.type === "function_call");
  assert.deepEqual([call.name, JSON.parse(call.arguments)], ["get_weather", { city: "Lima" }]);
  input.push(...first.output, { type: "function_call_output", call_id: call.call_id, output: "fog" });
  const second = await ask();
  assert.match(second.output_text, /fog/);
  const reqs = await upstreamSawOnlyPoolKeys(pathStartsWith(`/v1beta/models/${GEMINI_3}:streamGenerateContent`));
  assert.match(reqs.at(-1).body.contents[1].parts[0].thoughtSignature, /^EtYDCtMDAdHtim/);
});

test("openai responses: a 401, and what the proxy does not keep", { skip }, async () => {
  await fresh();
  const wrong = new OpenAI({ baseURL: `${external}/v1`, apiKey: "AQ.notTheProxyKey0123456789abcdef", maxRetries: 0 });
  await assert.rejects(wrong.responses.create({ model: "gemini-2.5-flash", input: "hi" }), (e) => e instanceof OpenAI.AuthenticationError);
  await assert.rejects(client().responses.retrieve("resp_1"), (e) => e instanceof OpenAI.NotFoundError);
  await assert.rejects(
    client().responses.create({ model: "gemini-2.5-flash", input: "more", previous_response_id: "resp_1" }),
    (e) => e instanceof OpenAI.BadRequestError && /whole conversation/.test(e.message),
  );
});

// The AI SDK's default OpenAI provider speaks the Responses API.
const provider = () => createOpenAI({ baseURL: `${external}/v1`, apiKey: env.E2E_PROXY_KEY });

test("@ai-sdk/openai: generateText and streamText", { skip }, async () => {
  await fresh();
  const { text, finishReason } = await generateText({ model: provider()("gemini-2.5-flash"), prompt: "hi", maxRetries: 0 });
  assert.equal(text, "Hello from the fake gemini-2.5-flash.");
  assert.equal(finishReason, "stop");
  const result = streamText({ model: provider()("gemini-2.5-flash"), prompt: "hi", maxRetries: 0 });
  let streamed = "";
  for await (const part of result.textStream) streamed += part;
  assert.equal(streamed, "chunk 0 chunk 1 chunk 2 ");
  await upstreamSawOnlyPoolKeys(pathStartsWith("/v1beta/models/gemini-2.5-flash:"));
});

test("@ai-sdk/openai: a tool the SDK runs, on Gemini 3", { skip }, async () => {
  await fresh();
  const { text, steps } = await generateText({
    model: provider()(GEMINI_3),
    prompt: 'CALL get_weather {"city": "Rome"}',
    tools: {
      get_weather: tool({
        description: "The weather in a city",
        inputSchema: z.object({ city: z.string() }),
        execute: async ({ city }) => `${city}: clear`,
      }),
    },
    stopWhen: stepCountIs(3),
    maxRetries: 0,
  });
  assert.equal(steps.length, 2);
  assert.match(text, /Rome: clear/);
  const reqs = await upstreamSawOnlyPoolKeys(pathStartsWith(`/v1beta/models/${GEMINI_3}:`));
  assert.match(reqs.at(-1).body.contents[1].parts[0].thoughtSignature, /^EtYDCtMDAdHtim/);
});
