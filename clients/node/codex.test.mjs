// Codex itself (the pinned @openai/codex) against the proxy's Responses API,
// with nothing but a provider's base URL and key set in a fresh CODEX_HOME:
// a prompt, and a prompt that makes it run a command, on a Gemini 3 model.
// scripts/e2e runs this against every host with E2E_PROXY_URL,
// E2E_FAKE_ORIGIN, E2E_POOL_KEYS, E2E_PROXY_KEY set.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtempSync, existsSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { env, external, skip, fake, upstreamSawOnlyPoolKeys as poolKeysOnly } from "./fake.mjs";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const codex = join(root, "node_modules", ".bin", "codex");
const GEMINI_3 = "gemini-3-pro-preview";

// Every run's directories live under one, removed when the file's tests end.
const scratch = mkdtempSync(join(tmpdir(), "codex-test-"));
after(() => rmSync(scratch, { recursive: true, force: true }));

/** Runs `codex exec prompt` with a fresh HOME and CODEX_HOME whose config
 * names the proxy as its provider (no retries: a failure shows at once). */
function run(prompt, args = []) {
  const home = mkdtempSync(join(scratch, "home-"));
  const codexHome = mkdtempSync(join(scratch, "config-"));
  const cwd = mkdtempSync(join(scratch, "work-"));
  writeFileSync(join(codexHome, "config.toml"), [
    `model = "${GEMINI_3}"`,
    'model_provider = "gemini-proxy"',
    "",
    "[model_providers.gemini-proxy]",
    'name = "gemini-proxy"',
    `base_url = "${external}/v1"`,
    'env_key = "GEMINI_PROXY_KEY"',
    'wire_api = "responses"',
    "request_max_retries = 0",
    "stream_max_retries = 0",
    "",
  ].join("\n"));
  const childEnv = { PATH: env.PATH, HOME: home, CODEX_HOME: codexHome, GEMINI_PROXY_KEY: env.E2E_PROXY_KEY };
  return new Promise((resolve) => {
    const child = execFile(codex, ["exec", "--skip-git-repo-check", ...args, prompt], { env: childEnv, cwd, timeout: 120_000 },
      (error, stdout, stderr) => resolve({ code: error ? (error.code ?? 1) : 0, stdout, stderr, cwd }));
    child.stdin.end();
  });
}

/** The upstream saw only pool keys, each on the Gemini 3 stream Codex's turns became. */
const upstreamSawOnlyPoolKeys = () =>
  poolKeysOnly((r) => assert.equal(r.path, `/v1beta/models/${GEMINI_3}:streamGenerateContent`));

test("codex exec: a prompt", { skip, timeout: 150_000 }, async () => {
  await fake("reset", {});
  const r = await run("Say hi");
  assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
  assert.match(r.stdout, /chunk 0 chunk 1 chunk 2/);
  await upstreamSawOnlyPoolKeys();
});

test("codex exec: a prompt that runs a command and finishes, on Gemini 3", { skip, timeout: 150_000 }, async () => {
  await fake("reset", {});
  const prompt = 'CALL exec_command {"cmd": "echo ran-by-codex > marker.txt"}';
  const r = await run(prompt, ["--sandbox", "danger-full-access"]);
  assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
  assert.ok(existsSync(join(r.cwd, "marker.txt")), `the command did not run: ${r.stdout}\n${r.stderr}`);
  assert.equal(readFileSync(join(r.cwd, "marker.txt"), "utf8").trim(), "ran-by-codex");
  assert.match(r.stdout, /The tool exec_command answered/);
  const reqs = await upstreamSawOnlyPoolKeys();
  // The turn after the call went to Gemini 3 with Google's own signature.
  const call = reqs.at(-1).body.contents.flatMap((c) => c.parts).find((p) => p.functionCall);
  assert.equal(call.functionCall.name, "exec_command");
  assert.match(call.thoughtSignature, /^EtYDCtMDAdHtim/);
});
