// gemini-cli, non-interactive, against a running proxy, in each way it can
// send its credential: GEMINI_API_KEY as x-goog-api-key, as a Bearer token
// (GEMINI_API_KEY_AUTH_MECHANISM=bearer), and gateway mode
// (GOOGLE_GEMINI_BASE_URL without an auth type: an empty x-goog-api-key
// when it has no key), with the proxy key in a custom header, or with no
// key against an open proxy. scripts/e2e runs this against a proxy with a
// key (E2E_PROXY_KEY set) and against an open one (E2E_PROXY_KEY empty);
// the tests that do not apply to the running proxy report themselves skipped.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { promisify } from "node:util";

// Every run's directories live under one, removed when the file's tests end.
const scratch = mkdtempSync(join(tmpdir(), "gemini-cli-test-"));
after(() => rmSync(scratch, { recursive: true, force: true }));

const env = process.env;
const bin = resolve(import.meta.dirname, "..", "..", "node_modules", ".bin", "gemini");
const unset = env.E2E_PROXY_URL ? false : "E2E_PROXY_URL is unset (scripts/e2e runs this)";
const open = !env.E2E_PROXY_KEY;
const needsKey = unset || (open ? "the proxy under test is open (no PROXY_API_KEY)" : false);
const needsOpen = unset || (open ? false : "the proxy under test has a PROXY_API_KEY");

// Runs one prompt with `settings` (null: no settings file) and extra
// environment; returns stdout once the upstream saw only pool keys.
async function prompt(settings, extraEnv) {
  await fetch(`${env.E2E_FAKE_ORIGIN}/_fake/reset`, { method: "POST", body: "{}" });
  const home = mkdtempSync(join(scratch, "home-"));
  mkdirSync(join(home, ".gemini"));
  writeFileSync(join(home, ".gemini", "settings.json"), JSON.stringify({
    ...settings,
    telemetry: { enabled: false },
    privacy: { usageStatisticsEnabled: false },
  }));
  const { stdout } = await promisify(execFile)(bin, ["-p", "Say hi", "-m", "gemini-2.5-flash"], {
    cwd: home,
    env: {
      PATH: env.PATH,
      HOME: home,
      GEMINI_CLI_TRUST_WORKSPACE: "true",
      GOOGLE_GEMINI_BASE_URL: env.E2E_PROXY_URL,
      NO_COLOR: "1",
      ...extraEnv,
    },
    timeout: 110_000,
  });
  assert.match(stdout, /chunk 0 chunk 1 chunk 2/);
  const reqs = await (await fetch(`${env.E2E_FAKE_ORIGIN}/_fake/requests`)).json();
  const pool = env.E2E_POOL_KEYS.split(",");
  assert.ok(reqs.length >= 1, "the upstream saw no request");
  for (const r of reqs) {
    assert.equal(r.credentials.length, 1, JSON.stringify(r.credentials.map(([m]) => m)));
    assert.equal(r.credentials[0][0], "goog-api-key");
    assert.ok(pool.includes(r.credentials[0][1]), "a non-pool credential went upstream");
    assert.ok(r.path.startsWith("/v1beta/models/"), r.path);
  }
  return stdout;
}

const apiKeyMode = { security: { auth: { selectedType: "gemini-api-key" } } };
// No auth type: with GOOGLE_GEMINI_BASE_URL set, gemini-cli picks "gateway".
// Its non-interactive start (0.61) accepts that type only with
// `useExternal`, which skips its own check of the auth type.
const gatewayMode = { security: { auth: { useExternal: true } } };

test("gemini-cli: the proxy key as GEMINI_API_KEY", { skip: needsKey, timeout: 120_000 }, async () => {
  await prompt(apiKeyMode, { GEMINI_API_KEY: env.E2E_PROXY_KEY });
});

test("gemini-cli: the proxy key as a Bearer token", { skip: needsKey, timeout: 120_000 }, async () => {
  await prompt(apiKeyMode, { GEMINI_API_KEY: env.E2E_PROXY_KEY, GEMINI_API_KEY_AUTH_MECHANISM: "bearer" });
});

test("gemini-cli: gateway mode, an empty key header and the proxy key in a custom header", { skip: needsKey, timeout: 120_000 }, async () => {
  await prompt(gatewayMode, { GEMINI_CLI_CUSTOM_HEADERS: `Authorization: Bearer ${env.E2E_PROXY_KEY}` });
});

test("gemini-cli: gateway mode, no key at all, against an open proxy", { skip: needsOpen, timeout: 120_000 }, async () => {
  await prompt(gatewayMode, {});
});
