// gemini-cli, non-interactive, against a running proxy
// (GOOGLE_GEMINI_BASE_URL + GEMINI_API_KEY). Run by scripts/e2e.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtempSync, mkdirSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { promisify } from "node:util";

const env = process.env;
const skip = env.E2E_PROXY_URL ? false : "E2E_PROXY_URL is unset (scripts/e2e runs this)";
const bin = resolve(import.meta.dirname, "..", "..", "node_modules", ".bin", "gemini");

test("gemini-cli: one non-interactive prompt", { skip, timeout: 120_000 }, async () => {
  await fetch(`${env.E2E_FAKE_ORIGIN}/_fake/reset`, { method: "POST", body: "{}" });
  const home = mkdtempSync(join(tmpdir(), "gemini-cli-"));
  mkdirSync(join(home, ".gemini"));
  writeFileSync(join(home, ".gemini", "settings.json"), JSON.stringify({
    security: { auth: { selectedType: "gemini-api-key" } },
    telemetry: { enabled: false },
    privacy: { usageStatisticsEnabled: false },
  }));
  const { stdout } = await promisify(execFile)(bin, ["-p", "Say hi", "-m", "gemini-2.5-flash"], {
    cwd: home,
    env: { PATH: env.PATH, HOME: home, GEMINI_CLI_TRUST_WORKSPACE: "true", GOOGLE_GEMINI_BASE_URL: env.E2E_PROXY_URL, GEMINI_API_KEY: env.E2E_PROXY_KEY, NO_COLOR: "1" },
    timeout: 110_000,
  });
  assert.match(stdout, /chunk 0 chunk 1 chunk 2/);
  const reqs = await (await fetch(`${env.E2E_FAKE_ORIGIN}/_fake/requests`)).json();
  const pool = env.E2E_POOL_KEYS.split(",");
  assert.ok(reqs.length >= 1);
  for (const r of reqs) {
    assert.equal(r.credentials.length, 1);
    assert.equal(r.credentials[0][0], "goog-api-key");
    assert.ok(pool.includes(r.credentials[0][1]), "a non-pool credential went upstream");
    assert.ok(r.path.startsWith("/v1beta/models/"), r.path);
  }
});
