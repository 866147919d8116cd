// @google/genai's Live client (ai.live.connect) through the proxy, with only
// the base URL and key changed: a text turn, an audio round trip, a session
// opened with an ephemeral token minted through the proxy, and /stat showing
// the sessions under their key and model with their tokens. The SDK turns an
// http:// base URL into ws:// (and an https:// one into wss://: scripts/e2e
// runs this file over TLS too, with NODE_EXTRA_CA_CERTS).
import { test, before } from "node:test";
import assert from "node:assert/strict";
import { GoogleGenAI, Modality } from "@google/genai";
import { env, external, skip, fake, fresh } from "./fake.mjs";

const MODEL = "gemini-live-2.5-flash-preview";

before(async () => {
  if (skip) return;
  await fetch(`${external}/stat/reset`, { method: "POST", headers: { authorization: `Bearer ${env.E2E_PROXY_KEY}` } });
});

const ai = (apiKey = env.E2E_PROXY_KEY, apiVersion = undefined) =>
  new GoogleGenAI({ apiKey, httpOptions: { baseUrl: external, ...(apiVersion ? { apiVersion } : {}) } });

/** Opens a session whose messages queue up; `next()` waits for the next one. */
async function open(client, config = { responseModalities: [Modality.TEXT] }) {
  const queue = [];
  const waiting = [];
  let closed = null;
  const push = (m) => (waiting.length ? waiting.shift()(m) : queue.push(m));
  const session = await client.live.connect({
    model: MODEL,
    config,
    callbacks: {
      onmessage: push,
      onclose: (e) => {
        closed = { code: e.code, reason: e.reason };
        push(null);
      },
    },
  });
  const next = () =>
    queue.length
      ? Promise.resolve(queue.shift())
      : new Promise((resolve, reject) => {
          waiting.push(resolve);
          setTimeout(() => reject(new Error("no message in 10 s")), 10_000).unref();
        });
  return { session, next, closed: () => closed };
}

/** The messages of one turn, up to its turnComplete. */
async function turnOf(next) {
  const messages = [];
  for (;;) {
    const m = await next();
    assert.ok(m, "the session closed mid-turn");
    messages.push(m);
    if (m.serverContent?.turnComplete) return messages;
  }
}

/** /stat.json once `done` holds (the Worker's reports land a moment after). */
async function statsWhen(done) {
  let s;
  for (let i = 0; i < 100; i++) {
    const r = await fetch(`${external}/stat.json`, { headers: { authorization: `Bearer ${env.E2E_PROXY_KEY}` } });
    s = await r.json();
    if (done(s)) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  return s;
}

const liveSessions = async () => (await fake("requests")).filter((r) => r.method === "WS");

test("live: a text turn and an audio round trip, counted under the key and model", { skip }, async () => {
  await fresh();
  const { session, next } = await open(ai());
  try {
    await talk(session, next);
  } finally {
    session.close();
  }
});

/** A text turn, then an audio round trip, then /stat counts the session. */
async function talk(session, next) {
  session.sendClientContent({ turns: "hello live", turnComplete: true });
  const turn = await turnOf(next);
  const text = turn.map((m) => m.serverContent?.modelTurn?.parts?.[0]?.text ?? "").join("");
  assert.equal(text, "Echo: hello live");
  const usage = turn.at(-1).usageMetadata;
  assert.ok(usage.promptTokenCount > 0);
  // Audio: each 16 kHz PCM chunk comes back as the model's voice, byte for byte.
  const chunks = [];
  for (let i = 0; i < 5; i++) {
    const pcm = Buffer.alloc(3200, i + 1).toString("base64");
    chunks.push(pcm);
    session.sendRealtimeInput({ audio: { data: pcm, mimeType: "audio/pcm;rate=16000" } });
  }
  for (const sent of chunks) {
    const m = await next();
    assert.equal(m.serverContent.modelTurn.parts[0].inlineData.data, sent);
  }
  session.sendRealtimeInput({ audioStreamEnd: true });
  const end = await next();
  assert.equal(end.serverContent.turnComplete, true);
  session.close();
  const [up] = await liveSessions();
  assert.ok(env.E2E_POOL_KEYS.split(",").includes(up.credentials[0][1]), "a pool key upstream");
  assert.equal(up.credentials[0][0], "goog-api-key", "in a header, never in the URL");
  assert.equal(up.query, null);
  const masked = (k) => `${k.slice(0, 4)}…${k.slice(-4)}`;
  const row = (s) => s.keys.find((k) => k.key === masked(up.credentials[0][1]));
  const s = await statsWhen((s) => row(s)?.models?.[MODEL]?.requests === 1);
  const cell = row(s).models[MODEL];
  assert.equal(cell.requests, 1, JSON.stringify(cell));
  assert.ok(cell.tokens.prompt >= usage.promptTokenCount, JSON.stringify(cell));
}

test("live: an ephemeral token minted through the proxy opens a constrained session", { skip }, async () => {
  await fresh();
  const token = await ai(env.E2E_PROXY_KEY, "v1alpha").authTokens.create({ config: { uses: 1 } });
  assert.match(token.name, /^auth_tokens\//);
  const { session, next } = await open(ai(token.name, "v1alpha"));
  try {
    session.sendClientContent({ turns: "with a token", turnComplete: true });
    const turn = await turnOf(next);
    const text = turn.map((m) => m.serverContent?.modelTurn?.parts?.[0]?.text ?? "").join("");
    assert.equal(text, "Echo: with a token");
  } finally {
    session.close();
  }
  const [up] = await liveSessions();
  assert.ok(up.path.endsWith("BidiGenerateContentConstrained"), up.path);
  assert.deepEqual(up.credentials, [["access-token", token.name]], "the token as is, no pool key");
});

const open_proxy = !skip && !env.E2E_PROXY_KEY && "an open proxy has no key to refuse";
test("live: without the proxy key the session is refused and nothing reaches Google", { skip: skip || open_proxy }, async () => {
  await fresh();
  await assert.rejects(open(ai("AIzaSyNOTaPROXYkeyNORaCLIENTkey000000000")), /closed|failed|1008/i);
  assert.equal((await liveSessions()).length, 0);
});
