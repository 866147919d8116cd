// What every client test here shares: the stack under test (scripts/e2e
// sets E2E_PROXY_URL, E2E_FAKE_ORIGIN, E2E_PROXY_KEY, E2E_POOL_KEYS), the
// fake upstream's control routes, and the check that the upstream saw only
// pool keys. Not a test file itself (node --test runs *.test.mjs).
import assert from "node:assert/strict";

export const env = process.env;
export const external = env.E2E_PROXY_URL;
export const skip = external ? false : "E2E_PROXY_URL is unset (scripts/e2e runs this)";

/** A control route of the fake upstream (`requests`, `reset`, …): GET, or POST with `body`. */
export async function fake(path, body) {
  const r = await fetch(`${env.E2E_FAKE_ORIGIN}/_fake/${path}`, body ? { method: "POST", body: JSON.stringify(body) } : {});
  return r.json();
}

/** Forgets the fake upstream's requests and behaviours. */
export const fresh = () => fake("reset", {});

/** The upstream's requests since its reset: at least one, each with exactly
 * one credential, a pool key, and passing `check` (its path, say). */
export async function upstreamSawOnlyPoolKeys(check) {
  const pool = env.E2E_POOL_KEYS.split(",");
  const reqs = await fake("requests");
  assert.ok(reqs.length > 0, "the upstream saw no request");
  for (const r of reqs) {
    assert.equal(r.credentials.length, 1, JSON.stringify(r));
    assert.ok(pool.includes(r.credentials[0][1]), "a non-pool credential went upstream");
    check(r);
  }
  return reqs;
}

/** A `check` for {@link upstreamSawOnlyPoolKeys}: the path starts with `prefix`. */
export const pathStartsWith = (prefix) => (r) => assert.ok(r.path.startsWith(prefix), r.path);
