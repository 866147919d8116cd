// Anthropic's clients against the proxy's Messages API (served from Gemini):
// @anthropic-ai/sdk and the AI SDK's @ai-sdk/anthropic provider, with only
// base URL and key changed. scripts/e2e runs this against every host with
// E2E_PROXY_URL, E2E_FAKE_ORIGIN, E2E_POOL_KEYS, E2E_PROXY_KEY set.
import { test } from "node:test";
import assert from "node:assert/strict";
import Anthropic from "@anthropic-ai/sdk";
import { createAnthropic } from "@ai-sdk/anthropic";
import { generateText, streamText, tool, stepCountIs } from "ai";
import { z } from "zod";
import { env, external, skip, fresh, pathStartsWith, upstreamSawOnlyPoolKeys } from "./fake.mjs";

const SONNET = "claude-sonnet-4-5-20250929";
const GEMINI_3 = "gemini-3-pro-preview";

const client = () => new Anthropic({ baseURL: external, apiKey: env.E2E_PROXY_KEY, maxRetries: 0 });
const weather = {
  name: "get_weather",
  description: "The weather in a city",
  input_schema: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
};

test("@anthropic-ai/sdk: a message, on an aliased model", { skip }, async () => {
  await fresh();
  const m = await client().messages.create({ model: SONNET, max_tokens: 100, messages: [{ role: "user", content: "hi" }] });
  assert.equal(m.content[0].text, "Hello from the fake gemini-3-flash-preview.");
  assert.equal(m.model, SONNET);
  assert.equal(m.stop_reason, "end_turn");
  await upstreamSawOnlyPoolKeys(pathStartsWith("/v1beta/models/gemini-3-flash-preview:generateContent"));
});

test("@anthropic-ai/sdk: a stream", { skip }, async () => {
  await fresh();
  const stream = client().messages.stream({ model: SONNET, max_tokens: 100, messages: [{ role: "user", content: "hi" }] });
  let text = "";
  stream.on("text", (t) => (text += t));
  const final = await stream.finalMessage();
  assert.equal(text, "chunk 0 chunk 1 chunk 2 ");
  assert.equal(final.stop_reason, "end_turn");
  assert.ok(final.usage.output_tokens > 0);
});

test("@anthropic-ai/sdk: a tool over two turns on Gemini 3, streamed", { skip }, async () => {
  await fresh();
  const messages = [{ role: "user", content: 'CALL get_weather {"city": "Lima"}' }];
  const ask = () => client().messages.stream({ model: GEMINI_3, max_tokens: 500, tools: [weather], messages }).finalMessage();
  const first = await ask();
  assert.equal(first.stop_reason, "tool_use");
  const call = first.content.at(-1);
  assert.deepEqual([call.type, call.name, call.input], ["tool_use", "get_weather", { city: "Lima" }]);
  messages.push({ role: "assistant", content: first.content });
  messages.push({ role: "user", content: [{ type: "tool_result", tool_use_id: call.id, content: "fog" }] });
  const second = await ask();
  assert.match(second.content[0].text, /fog/);
  const reqs = await upstreamSawOnlyPoolKeys(pathStartsWith(`/v1beta/models/${GEMINI_3}:streamGenerateContent`));
  assert.match(reqs.at(-1).body.contents[1].parts[0].thoughtSignature, /^EtYDCtMDAdHtim/);
});

test("@anthropic-ai/sdk: count_tokens and a 401", { skip }, async () => {
  await fresh();
  const r = await client().messages.countTokens({ model: SONNET, messages: [{ role: "user", content: "count" }] });
  assert.equal(r.input_tokens, 7);
  const wrong = new Anthropic({ baseURL: external, apiKey: "AQ.notTheProxyKey0123456789abcdef", maxRetries: 0 });
  await assert.rejects(
    wrong.messages.create({ model: SONNET, max_tokens: 10, messages: [{ role: "user", content: "hi" }] }),
    (e) => e instanceof Anthropic.AuthenticationError && e.error?.error?.type === "authentication_error",
  );
});

const provider = () => createAnthropic({ baseURL: `${external}/v1`, apiKey: env.E2E_PROXY_KEY });

test("@ai-sdk/anthropic: generateText and streamText", { skip }, async () => {
  await fresh();
  const { text, finishReason } = await generateText({ model: provider()(SONNET), prompt: "hi", maxRetries: 0 });
  assert.equal(text, "Hello from the fake gemini-3-flash-preview.");
  assert.equal(finishReason, "stop");
  const result = streamText({ model: provider()(SONNET), prompt: "hi", maxRetries: 0 });
  let streamed = "";
  for await (const part of result.textStream) streamed += part;
  assert.equal(streamed, "chunk 0 chunk 1 chunk 2 ");
  await upstreamSawOnlyPoolKeys(pathStartsWith("/v1beta/models/gemini-3-flash-preview:"));
});

test("@ai-sdk/anthropic: a tool the SDK runs, on Gemini 3", { skip }, async () => {
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
});
