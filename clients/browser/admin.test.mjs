// The admin's actions on the /stat page in a real browser: sign in with
// ADMIN_API_KEY, paste keys (both formats) with a project, check one the
// upstream reports leaked, disable one with a note, remove one; each checked
// on the page and through the admin API, with a screenshot after each step.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { launchBrowser, shots, startProxy, stopAll } from "./harness.mjs";

const POOL = ["AIzaSyADMINpageKEY0000000000000000000a1", "AIzaSyADMINpageKEY0000000000000000000b2"];
const PROXY_KEY = "AQ.adminPAGEproxyKEY0123456789abcdefXYZ";
const ADMIN_KEY = "AQ.adminPAGEadminKEY0123456789abcdefXYZ";
const NEW_AIZA = "AIzaSyADMINpageADDEDkey0123456789abc3";
const NEW_AQ = "AQ.Ab8RN6adminPAGEaddedKEYnewFORMAT0123456789d4";
let fake, proxy, browser;

before(async () => {
  ({ fake, proxy } = await startProxy({
    API_KEYS: POOL.join(","), PROXY_API_KEY: PROXY_KEY, ADMIN_API_KEY: ADMIN_KEY,
    KEY_ENCRYPTION_SECRET: "browser-test-key-encryption-secret",
  }));
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  stopAll();
});

const masked = (k) => `${k.slice(0, 4)}…${k.slice(-4)}`;

async function adminList() {
  const r = await fetch(`${proxy}/admin/keys`, { headers: { authorization: `Bearer ${ADMIN_KEY}` } });
  assert.equal(r.status, 200);
  return (await r.json()).keys;
}

// The table row of a key, by its masked form.
const row = (page, key) => page.locator("tbody tr", { has: page.locator("td.key code", { hasText: masked(key) }) });

async function noSecretIn(page) {
  const html = await page.content();
  for (const secret of [...POOL, NEW_AIZA, NEW_AQ, PROXY_KEY, ADMIN_KEY]) assert.ok(!html.includes(secret), "a secret in the page");
}

test("an admin adds, checks, disables and removes keys on /stat", { timeout: 60_000 }, async () => {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const answers = [];
  page.on("dialog", (d) => {
    answers.push(`${d.type()}: ${d.message()}`);
    return d.type() === "prompt" ? d.accept("rotating this key out") : d.accept();
  });
  await page.goto(`${proxy}/stat?key=${encodeURIComponent(ADMIN_KEY)}`);
  assert.equal(page.url(), `${proxy}/stat`);
  assert.equal(await page.locator("body").getAttribute("data-admin"), "1");
  assert.equal(await page.locator("tbody td.actions").count(), 2);
  await page.screenshot({ path: join(shots, "admin-0-signed-in.png"), fullPage: true });

  // Add: a paste with odd separators and a duplicate, with a project.
  await page.fill("#new-keys", `${NEW_AIZA},\n  "${NEW_AQ}" ; ${NEW_AIZA}\n${POOL[0]}`);
  await page.fill("#new-project", "team-b");
  await page.click("#add-keys button[type=submit]");
  const result = page.locator("#admin-result");
  await result.waitFor({ state: "visible" });
  await page.waitForFunction(() => document.getElementById("admin-result").textContent.startsWith("Add: "));
  assert.match(await result.textContent(), /^Add: 2 added, 1 already present, 0 restored; 4 keys in the pool/);
  await page.waitForFunction(() => document.querySelectorAll("tbody td.actions").length === 4);
  assert.equal(await page.inputValue("#new-keys"), "", "the paste is cleared once added");
  const groups = await page.locator("tr.project th").allTextContents();
  assert.deepEqual(groups, ["project team-b · 2 keys", "no project · 2 keys"]);
  assert.equal(await row(page, NEW_AQ).locator(".badge.b-src").textContent(), "runtime");
  await noSecretIn(page);
  await page.screenshot({ path: join(shots, "admin-1-added.png"), fullPage: true });
  let keys = await adminList();
  assert.deepEqual(keys.filter((k) => k.project === "team-b").map((k) => k.key).sort(), [masked(NEW_AIZA), masked(NEW_AQ)].sort());

  // Check: the upstream reports the new AIza key leaked; it is disabled with the reason.
  await fetch(`${fake}/_fake/behavior`, { method: "POST", body: JSON.stringify({ key: NEW_AIZA, behavior: "leaked" }) });
  await row(page, NEW_AIZA).locator("button[data-act=check]").click();
  await page.waitForFunction(() => document.getElementById("admin-result").textContent.startsWith("Check: "));
  assert.match(await result.textContent(), /: leaked \(Your API key was reported as leaked/);
  await page.waitForFunction(() => document.querySelectorAll("tbody tr.disabled").length === 1);
  assert.equal(await row(page, NEW_AIZA).locator(".badge.b-day").textContent(), "leaked");
  assert.equal(await row(page, NEW_AIZA).locator("button[data-act=enable]").count(), 1);
  await page.screenshot({ path: join(shots, "admin-2-checked.png"), fullPage: true });
  keys = await adminList();
  const leaked = keys.find((k) => k.key === masked(NEW_AIZA));
  assert.equal(leaked.check.status, "leaked");
  assert.match(leaked.disabled.reason, /leaked/);

  // Disable with a note (a prompt).
  await row(page, POOL[0]).locator("button[data-act=disable]").click();
  await page.waitForFunction(() => document.getElementById("admin-result").textContent.startsWith("Disable: "));
  assert.match(await result.textContent(), /disabled: .*rotating this key out/);
  await page.waitForFunction(() => document.querySelectorAll("tbody tr.disabled").length === 2);
  await page.screenshot({ path: join(shots, "admin-3-disabled.png"), fullPage: true });
  keys = await adminList();
  assert.match(keys.find((k) => k.key === masked(POOL[0])).disabled.reason, /rotating this key out/);

  // Remove (a confirm).
  await row(page, NEW_AQ).locator("button[data-act=remove]").click();
  await page.waitForFunction(() => document.getElementById("admin-result").textContent.startsWith("Remove: "));
  assert.match(await result.textContent(), /; 3 keys in the pool/);
  await page.waitForFunction(() => document.querySelectorAll("tbody td.actions").length === 3);
  await page.screenshot({ path: join(shots, "admin-4-removed.png"), fullPage: true });
  keys = await adminList();
  assert.ok(!keys.some((k) => k.key === masked(NEW_AQ)), "the removed key is gone from the pool");
  assert.ok(answers.some((a) => a.startsWith("prompt: ")) && answers.some((a) => a.startsWith("confirm: ")), answers.join("; "));

  // The pool still serves, on the keys left.
  const r = await fetch(`${proxy}/v1beta/models/gemini-2.5-flash:generateContent`, {
    method: "POST", headers: { "x-goog-api-key": PROXY_KEY, "content-type": "application/json" },
    body: JSON.stringify({ contents: [{ parts: [{ text: "hi" }] }] }),
  });
  assert.equal(r.status, 200);
});

test("the admin's session cookie alone, as a cross-site form sends it, changes nothing", async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(`${proxy}/stat?key=${encodeURIComponent(ADMIN_KEY)}`);
  const before = (await adminList()).length;
  const r = await page.request.post(`${proxy}/admin/keys`, { form: { keys: "AIzaSyCROSSsiteFORMkey0123456789abcdef" } });
  assert.equal(r.status(), 403);
  assert.equal((await adminList()).length, before);
  await context.close();
});

test("a viewer (the proxy key) gets the page without the admin's actions", async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(`${proxy}/stat?key=${encodeURIComponent(PROXY_KEY)}`);
  assert.equal(await page.locator("body").getAttribute("data-admin"), null);
  assert.equal(await page.locator("button[data-act]").count(), 0);
  assert.equal(await page.locator("#admin").count(), 0);
  await context.close();
});

test("an admin creates a client key on /stat, sees its secret once, sets its quotas and revokes it", { timeout: 60_000 }, async () => {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const prompts = ["25", ""];
  page.on("dialog", (d) => (d.type() === "prompt" ? d.accept(prompts.shift() ?? "") : d.accept()));
  await page.goto(`${proxy}/stat?key=${encodeURIComponent(ADMIN_KEY)}`);
  await page.fill("#client-name", "browser friend");
  await page.fill("#client-models", "gemini-2.5-flash, gemini-2.5-pro");
  await page.fill("#client-requests", "10");
  await page.click("#add-client button[type=submit]");
  const result = page.locator("#admin-result");
  await page.waitForFunction(() => document.getElementById("admin-result").textContent.startsWith("Client: "));
  const secret = (await result.textContent()).match(/gpc-[A-Za-z0-9_-]{20,}/)?.[0];
  assert.ok(secret, await result.textContent());
  await page.waitForFunction(() => document.querySelectorAll("#clients tbody tr").length === 1);
  assert.ok(!(await page.locator("#data").innerHTML()).includes(secret), "the secret is not in the tables");
  await page.screenshot({ path: join(shots, "admin-5-client-created.png"), fullPage: true });
  // The key works at once, within its models.
  const call = (model) => fetch(`${proxy}/v1beta/models/${model}:generateContent`, {
    method: "POST", headers: { "x-goog-api-key": secret, "content-type": "application/json" },
    body: JSON.stringify({ contents: [{ parts: [{ text: "hi" }] }] }),
  }).then((r) => r.status);
  assert.equal(await call("gemini-2.5-flash"), 200);
  assert.equal(await call("gemini-2.0-flash"), 403);
  // Quotas: 25 requests, no token quota.
  await page.locator("#clients button[data-act=client-quota]").click();
  await page.waitForFunction(() => document.getElementById("admin-result").textContent.startsWith("Quotas: "));
  const clients = await (await fetch(`${proxy}/admin/clients`, { headers: { authorization: `Bearer ${ADMIN_KEY}` } })).json();
  assert.deepEqual(clients.clients[0].quota, { daily_requests: 25, daily_tokens: null });
  await page.waitForFunction(() => /1 \/ 25/.test(document.querySelector("#clients tbody tr").textContent));
  // Revoke: the key is refused from then on.
  await page.locator("#clients button[data-act=client-revoke]").click();
  await page.waitForFunction(() => document.getElementById("admin-result").textContent.startsWith("Revoke: "));
  await page.waitForFunction(() => !document.getElementById("clients"));
  assert.equal(await call("gemini-2.5-flash"), 401);
  await page.close();
});

test("an admin edits the model aliases on /stat; the next request follows them", { timeout: 60_000 }, async () => {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  await page.goto(`${proxy}/stat?key=${encodeURIComponent(ADMIN_KEY)}`);
  await page.locator("#aliases summary").click();
  await page.waitForFunction(() => document.getElementById("alias-layers").textContent.includes("claude-opus-*=gemini-3-pro-preview"));
  assert.equal(await page.inputValue("#alias-table"), "");
  await page.fill("#alias-table", "team-model=gemini-2.5-flash-lite\nclaude-*=models/gemini-2.5-flash");
  await page.click("#aliases button[type=submit]");
  await page.waitForFunction(() => document.getElementById("admin-result").textContent.startsWith("Aliases: "));
  assert.match(await page.locator("#admin-result").textContent(), /^Aliases: 2 set/);
  assert.equal(await page.inputValue("#alias-table"), "team-model=gemini-2.5-flash-lite\nclaude-*=gemini-2.5-flash");
  await page.screenshot({ path: join(shots, "admin-6-aliases.png"), fullPage: true });
  // The next request with the alias reaches Google as the Gemini model.
  const r = await fetch(`${proxy}/v1beta/models/team-model:generateContent`, {
    method: "POST", headers: { "x-goog-api-key": PROXY_KEY, "content-type": "application/json" },
    body: JSON.stringify({ contents: [{ parts: [{ text: "hi" }] }] }),
  });
  assert.equal(r.status, 200);
  const seen = await (await fetch(`${fake}/_fake/requests`)).json();
  assert.ok(seen.some((q) => q.path.endsWith("/models/gemini-2.5-flash-lite:generateContent")), JSON.stringify(seen.map((q) => q.path)));
  // A bad line is refused whole, with why, and the table in force stays.
  await page.fill("#alias-table", "team-model=gemini 3");
  await page.click("#aliases button[type=submit]");
  await page.waitForFunction(() => document.getElementById("admin-result").textContent.startsWith("Aliases failed (400)"));
  assert.match(await page.locator("#admin-result").textContent(), /not a Gemini model name/);
  const table = await (await fetch(`${proxy}/admin/aliases`, { headers: { authorization: `Bearer ${ADMIN_KEY}` } })).json();
  assert.equal(table.aliases.length, 2);
  await page.close();
});

test("an admin sets a project's outbound proxy on /stat; it shows masked, its password nowhere", { timeout: 60_000 }, async () => {
  const PASSWORD = "Br0wser-proxy-pw";
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  await page.goto(`${proxy}/stat?key=${encodeURIComponent(ADMIN_KEY)}`);
  await page.fill("#proxy-project", "team-proxy");
  await page.fill("#proxy-url", `socks5h://me:${PASSWORD}@127.0.0.1:1080`);
  await page.click("#proxies button[type=submit]");
  await page.waitForFunction(() => document.getElementById("admin-result").textContent.startsWith("Proxy: "));
  await page.waitForFunction(() => document.getElementById("proxy-list").textContent.includes("team-proxy"));
  assert.match(await page.locator("#proxy-list").textContent(), /team-proxy \(0 keys\): socks5h:\/\/me:\*\*\*@127\.0\.0\.1:1080/);
  assert.equal(await page.inputValue("#proxy-url"), "", "the URL typed is cleared");
  assert.ok(!(await page.content()).includes(PASSWORD), "the password in the page");
  await page.screenshot({ path: join(shots, "admin-9-proxy.png"), fullPage: true });
  const listed = await (await fetch(`${proxy}/admin/proxies`, { headers: { authorization: `Bearer ${ADMIN_KEY}` } })).json();
  assert.deepEqual(listed.projects.find((p) => p.project === "team-proxy"), { project: "team-proxy", keys: 0, proxy: "socks5h://me:***@127.0.0.1:1080" });
  // A URL that is no proxy's is refused, with why, and the proxy stays.
  await page.fill("#proxy-project", "team-proxy");
  await page.fill("#proxy-url", "ftp://me:x@h");
  await page.click("#proxies button[type=submit]");
  await page.waitForFunction(() => document.getElementById("admin-result").textContent.startsWith("Proxy failed (400)"));
  // Cleared: the project goes straight again.
  await page.fill("#proxy-url", "");
  await page.click("#proxies button[type=submit]");
  // (A project with no key and no proxy leaves the list.)
  await page.waitForFunction(() => !document.getElementById("proxy-list").textContent.includes("team-proxy"));
  await page.close();
});

test("an admin finds a failed request in Recent requests on /stat, with its attempts", { timeout: 60_000 }, async () => {
  const call = (model) => fetch(`${proxy}/v1beta/models/${model}:generateContent`, {
    method: "POST", headers: { "x-goog-api-key": PROXY_KEY, "content-type": "application/json" },
    body: JSON.stringify({ contents: [{ parts: [{ text: "hi" }] }] }),
  });
  assert.equal((await call("gemini-2.5-flash")).status, 200);
  await fetch(`${fake}/_fake/behavior`, { method: "POST", body: JSON.stringify({ key: "*", behavior: "5xx:503" }) });
  const failed = await call("gemini-2.5-pro");
  await fetch(`${fake}/_fake/behavior`, { method: "POST", body: JSON.stringify({ key: "*", behavior: "ok" }) });
  assert.ok(failed.status >= 500, `${failed.status}`);

  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  await page.goto(`${proxy}/stat?key=${encodeURIComponent(ADMIN_KEY)}`);
  const rows = page.locator("#req-table tbody tr.req");
  await rows.first().waitFor();
  // Only the failed ones, by the status filter.
  await page.selectOption("#req-filter select[name=status]", "failed");
  await page.click("#req-filter button[type=submit]");
  await page.waitForFunction(() => [...document.querySelectorAll("#req-table tbody tr.req")].every((tr) => tr.classList.contains("failed")));
  const failedRow = rows.filter({ hasText: "gemini-2.5-pro" }).first();
  await failedRow.click();
  const detail = page.locator("#req-detail");
  await detail.waitFor();
  const text = await detail.textContent();
  // Each usable key tried (the earlier tests left one), each with Google's reason.
  assert.match(text, /attempt 1: key k-\w+ · upstream-error · 503: The model is overloaded/);
  assert.match(text, /POST \/v1beta\/models\/gemini-2.5-pro:generateContent · 50\d/);
  await page.screenshot({ path: join(shots, "admin-7-requests.png"), fullPage: true });
  await noSecretIn(page);
  await page.close();
});

test("the admin's page in Chinese: the actions, Recent requests and a request's attempts", { timeout: 60_000 }, async () => {
  const context = await browser.newContext({ locale: "zh-CN", viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  await page.goto(`${proxy}/stat?key=${encodeURIComponent(ADMIN_KEY)}`);
  assert.equal(await page.locator("html").getAttribute("lang"), "zh-CN");
  assert.equal(await page.locator("#admin h2").textContent(), "管理密钥");
  assert.equal(await page.locator("#requests h2").textContent(), "最近的请求");
  assert.equal(await page.locator("#add-keys button[type=submit]").textContent(), "添加密钥");
  const row = page.locator("#req-table tbody tr.req").first();
  await row.waitFor();
  await row.click();
  await page.locator("#req-detail").waitFor();
  assert.match(await page.locator("#req-detail").textContent(), /尝试 1: 密钥 k-\w+ · /);
  assert.match(await page.locator("#req-detail").textContent(), /首字节 .* · 总耗时 /);
  await page.screenshot({ path: join(shots, "admin-8-zh.png"), fullPage: true });
  await noSecretIn(page);
  await context.close();
});
