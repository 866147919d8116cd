// Claude Code itself (the pinned @anthropic-ai/claude-code) against the
// proxy, with nothing but ANTHROPIC_BASE_URL and a key set, in a fresh HOME:
// its own model names go to Gemini through the default aliases. scripts/e2e
// runs this against every host with E2E_PROXY_URL, E2E_FAKE_ORIGIN,
// E2E_POOL_KEYS, E2E_PROXY_KEY set.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtempSync, existsSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { env, external, skip, fake, upstreamSawOnlyPoolKeys as poolKeysOnly } from "./fake.mjs";

// Every run's directories live under one, removed when the file's tests end.
const scratch = mkdtempSync(join(tmpdir(), "claude-test-"));
after(() => rmSync(scratch, { recursive: true, force: true }));

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const claude = join(root, "node_modules", ".bin", "claude");

/** Runs `claude -p prompt` in a fresh HOME and working directory. */
function run(prompt, args = []) {
  const home = mkdtempSync(join(scratch, "home-"));
  const cwd = mkdtempSync(join(scratch, "work-"));
  const childEnv = {
    PATH: env.PATH,
    HOME: home,
    ANTHROPIC_BASE_URL: external,
    ANTHROPIC_API_KEY: env.E2E_PROXY_KEY,
    DISABLE_TELEMETRY: "1",
    DISABLE_AUTOUPDATER: "1",
    DISABLE_ERROR_REPORTING: "1",
    CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: "1",
    CLAUDE_CODE_MAX_RETRIES: "0",
  };
  return new Promise((resolve) => {
    execFile(claude, ["-p", prompt, ...args], { env: childEnv, cwd, timeout: 120_000 }, (error, stdout, stderr) =>
      resolve({ code: error ? (error.code ?? 1) : 0, stdout, stderr, cwd }),
    );
  });
}

/** The upstream saw only pool keys, each on a Gemini call a Messages call became. */
const upstreamSawOnlyPoolKeys = () =>
  poolKeysOnly((r) =>
    assert.match(r.path, /^\/v1beta\/models\/gemini-[^/]+:(generateContent|streamGenerateContent|countTokens)$/),
  );

test("claude -p: a prompt", { skip, timeout: 150_000 }, async () => {
  await fake("reset", {});
  const r = await run("Say hi");
  assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
  assert.match(r.stdout, /chunk 0 chunk 1 chunk 2|Hello from the fake gemini-/);
  await upstreamSawOnlyPoolKeys();
});

test("claude -p: a prompt that runs a tool and finishes, on Gemini 3", { skip, timeout: 150_000 }, async () => {
  await fake("reset", {});
  const prompt = 'CALL Bash {"command": "echo ran-by-claude > marker.txt", "description": "Write a marker"}';
  const r = await run(prompt, ["--model", "claude-opus-4-5", "--allowedTools", "Bash"]);
  assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
  assert.ok(existsSync(join(r.cwd, "marker.txt")), `the tool did not run: ${r.stdout}\n${r.stderr}`);
  assert.equal(readFileSync(join(r.cwd, "marker.txt"), "utf8").trim(), "ran-by-claude");
  assert.match(r.stdout, /The tool Bash answered/);
  const reqs = await upstreamSawOnlyPoolKeys();
  // The turn after the call went to Gemini 3 with Google's own signature.
  const followUps = reqs.filter((q) => q.path.includes("gemini-3-pro-preview") && JSON.stringify(q.body).includes("functionResponse"));
  assert.ok(followUps.length > 0, "no follow-up turn reached Gemini 3");
  const call = followUps.at(-1).body.contents.flatMap((c) => c.parts).find((p) => p.functionCall);
  assert.match(call.thoughtSignature, /^EtYDCtMDAdHtim/);
});
