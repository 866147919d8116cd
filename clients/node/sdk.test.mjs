// The official Node SDKs (openai, @google/genai) against a running proxy,
// with only base URL and key changed. scripts/e2e runs this against every
// host with E2E_PROXY_URL, E2E_FAKE_ORIGIN, E2E_POOL_KEYS, E2E_PROXY_KEY set.
import { test, before } from "node:test";
import assert from "node:assert/strict";
import OpenAI from "openai";
import { GoogleGenAI } from "@google/genai";
import { env, external, skip, fake, fresh, upstreamSawOnlyPoolKeys as poolKeysOnly } from "./fake.mjs";

const MODEL = "gemini-2.5-flash";

/** The upstream saw only pool keys, below `prefix`, each in the mechanism of its API. */
async function upstreamSawOnlyPoolKeys(prefix) {
  await poolKeysOnly((r) => {
    assert.ok(r.path.startsWith(prefix), r.path);
    assert.equal(r.credentials[0][0], r.path.startsWith("/v1beta/openai/") ? "bearer" : "goog-api-key");
  });
}

before(async () => {
  if (skip) return;
  await fetch(`${external}/stat/reset`, { method: "POST", headers: { authorization: `Bearer ${env.E2E_PROXY_KEY}` } });
});

const oai = () => new OpenAI({ baseURL: `${external}/v1`, apiKey: env.E2E_PROXY_KEY, maxRetries: 0 });

test("openai: chat", { skip }, async () => {
  await fresh();
  const r = await oai().chat.completions.create({ model: MODEL, messages: [{ role: "user", content: "hi" }] });
  assert.equal(r.choices[0].message.content, `Hello from the fake ${MODEL}.`);
  await upstreamSawOnlyPoolKeys("/v1beta/openai/chat/completions");
});

test("openai: chat stream", { skip }, async () => {
  await fresh();
  const stream = await oai().chat.completions.create({ model: MODEL, messages: [{ role: "user", content: "hi" }], stream: true });
  let text = "";
  for await (const c of stream) text += c.choices[0]?.delta?.content ?? "";
  assert.equal(text, "chunk 0 chunk 1 chunk 2 ");
  await upstreamSawOnlyPoolKeys("/v1beta/openai/chat/completions");
});

test("openai: embeddings, float and the SDK's default base64", { skip }, async () => {
  await fresh();
  let r = await oai().embeddings.create({ model: "gemini-embedding-001", input: ["a", "b"], encoding_format: "float" });
  assert.equal(r.data.length, 2);
  assert.equal(r.data[0].embedding[1], -0.5);
  r = await oai().embeddings.create({ model: "gemini-embedding-001", input: "a" });
  assert.equal(r.data[0].embedding[1], -0.5);
  await upstreamSawOnlyPoolKeys("/v1beta/openai/embeddings");
});

test("openai: models list", { skip }, async () => {
  await fresh();
  const ids = [];
  for await (const m of oai().models.list()) ids.push(m.id);
  assert.ok(ids.includes("models/gemini-2.5-flash"), ids.join());
  await upstreamSawOnlyPoolKeys("/v1beta/openai/models");
});

for (const apiVersion of [undefined, "v1beta"]) {
  const name = apiVersion ?? "SDK default version";
  const genai = () => new GoogleGenAI({ apiKey: env.E2E_PROXY_KEY, httpOptions: { baseUrl: external, ...(apiVersion ? { apiVersion } : {}) } });

  test(`@google/genai (${name}): generate`, { skip }, async () => {
    await fresh();
    const r = await genai().models.generateContent({ model: MODEL, contents: "hi" });
    assert.equal(r.text, `Hello from the fake ${MODEL}.`);
    await upstreamSawOnlyPoolKeys("/v1beta/models/");
  });

  test(`@google/genai (${name}): generate stream`, { skip }, async () => {
    await fresh();
    let text = "";
    for await (const c of await genai().models.generateContentStream({ model: MODEL, contents: "hi" })) text += c.text ?? "";
    assert.equal(text, "chunk 0 chunk 1 chunk 2 ");
    await upstreamSawOnlyPoolKeys("/v1beta/models/");
  });

  test(`@google/genai (${name}): countTokens, embed, models`, { skip }, async () => {
    await fresh();
    const c = await genai().models.countTokens({ model: MODEL, contents: "hi" });
    assert.equal(c.totalTokens, 7);
    const e = await genai().models.embedContent({ model: "gemini-embedding-001", contents: ["a", "b"] });
    assert.equal(e.embeddings.length, 2);
    const names = [];
    for await (const m of await genai().models.list()) names.push(m.name);
    assert.ok(names.includes("models/gemini-2.5-flash"), names.join());
    await upstreamSawOnlyPoolKeys("/v1beta/models");
  });

  test(`@google/genai (${name}): files.upload, then generate on the key that owns the file`, { skip }, async () => {
    await fresh();
    const blob = new Blob([new Uint8Array(2 * 1024 * 1024).fill(0x61)], { type: "text/plain" });
    const file = await genai().files.upload({ file: blob, config: { mimeType: "text/plain" } });
    assert.ok(file.name.startsWith("files/"), file.name);
    const owner = (await fake("requests")).find((r) => r.path.startsWith("/upload/") && r.credentials.length)
      .credentials[0][1];
    for (let i = 0; i < 3; i++) {
      const r = await genai().models.generateContent({
        model: MODEL,
        contents: [{ role: "user", parts: [{ fileData: { fileUri: file.uri, mimeType: file.mimeType } }, { text: "summarise" }] }],
      });
      assert.equal(r.text, `Hello from the fake ${MODEL}.`);
    }
    const generated = (await fake("requests")).filter((r) => r.path.endsWith(":generateContent"));
    assert.deepEqual(generated.slice(-3).map((r) => r.credentials[0][1]), [owner, owner, owner]);
    const pool = env.E2E_POOL_KEYS.split(",");
    for (const r of await fake("requests")) for (const [, key] of r.credentials) assert.ok(pool.includes(key));
  });

  test(`@google/genai (${name}): files.list pages through every key's files`, { skip }, async () => {
    await fresh();
    const made = [];
    for (let i = 0; i < 5; i++) {
      const blob = new Blob([`file ${i} `.repeat(100)], { type: "text/plain" });
      made.push((await genai().files.upload({ file: blob, config: { mimeType: "text/plain" } })).name);
    }
    const makers = new Set((await fake("requests")).filter((r) => r.path.startsWith("/upload/") && r.credentials.length)
      .map((r) => r.credentials[0][1]));
    assert.ok(makers.size > 1, "the files are spread over the keys");
    const listed = [];
    for await (const file of await genai().files.list({ config: { pageSize: 2 } })) listed.push(file.name);
    assert.deepEqual(listed.sort(), made.sort());
    const asked = (await fake("requests")).filter((r) => r.method === "GET" && /^\/v1(beta)?\/files$/.test(r.path));
    assert.equal(new Set(asked.map((r) => r.credentials[0][1])).size, env.E2E_POOL_KEYS.split(",").length);
  });
}
