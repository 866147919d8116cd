// What the browser tests share: starting the fake upstream and host-runner
// (built by cargo) on 127.0.0.1 ports the OS picks, Debian's Chromium through
// playwright-core, and where screenshots go. Everything started is stopped by
// stopAll().
import { spawn } from "node:child_process";
import { mkdtempSync, mkdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { chromium } from "playwright-core";

const root = resolve(import.meta.dirname, "..", "..");
const target = process.env.CARGO_TARGET_DIR ?? join(root, "target");
export const shots = join(target, "screenshots");
const procs = [];
const dirs = [];

function start(cmd, args, env, cwd) {
  const p = spawn(cmd, args, { env: { ...process.env, NO_COLOR: "1", ...env }, cwd, stdio: ["ignore", "pipe", "pipe"] });
  procs.push(p);
  return new Promise((ok, fail) => {
    let seen = "";
    const onData = (d) => {
      seen += d.toString();
      const m = seen.match(/listening on (http:\/\/[^\s]+)/);
      if (m) ok(m[1]);
    };
    p.stdout.on("data", onData);
    p.stderr.on("data", onData);
    p.on("error", (e) => fail(new Error(`${cmd} could not start: ${e.message}`)));
    p.on("exit", (code) => fail(new Error(`${cmd} exited ${code}: ${seen}`)));
    setTimeout(() => fail(new Error(`${cmd} did not start: ${seen}`)), 60_000).unref();
  });
}

// The fake upstream, and host-runner in front of it with `vars` (API_KEYS,
// PROXY_API_KEY, …) and a fresh store: their base URLs. (Without the models
// listing at start, so that the page shows only the tests' own calls.)
export async function startProxy(vars) {
  const fake = await start(join(target, "debug", "fake-upstream"), ["127.0.0.1:0"], {});
  const dir = mkdtempSync(join(tmpdir(), "stat-"));
  dirs.push(dir);
  const proxy = await start(join(target, "debug", "host-runner"), ["--listen", "127.0.0.1:0", "--db", join(dir, "k.sqlite3"), "--no-models-listing"], {
    ...vars, GEMINI_UPSTREAM_URL: `${fake}/v1beta`, OPENAI_UPSTREAM_URL: `${fake}/v1beta/openai`,
  }, dir);
  return { fake, proxy };
}

export async function launchBrowser() {
  mkdirSync(shots, { recursive: true });
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync"],
  });
}

export function stopAll() {
  for (const p of procs) p.kill("SIGTERM");
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
}
