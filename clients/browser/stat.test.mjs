// The /stat page in a real browser (Debian's Chromium driven by
// playwright-core): log in, read masked keys and counts, open a reason,
// keep it open across a refresh, reset, and save desktop and phone
// screenshots.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { launchBrowser, shots, startProxy, stopAll } from "./harness.mjs";

const POOL = ["AIzaSyBROWSERpoolKEY00000000000000000001", "AIzaSyBROWSERpoolKEY00000000000000000002", "AQ.BROWSERpoolTOKEN0123456789abcdefghij"];
const PROXY_KEY = "AQ.browserPROXYkey0123456789abcdefXYZ";
let fake, proxy, browser;

before(async () => {
  ({ fake, proxy } = await startProxy({ API_KEYS: POOL.join(","), PROXY_API_KEY: PROXY_KEY }));
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  stopAll();
});

async function generate(model) {
  const r = await fetch(`${proxy}/v1beta/models/${model}:generateContent`, {
    method: "POST", headers: { "x-goog-api-key": PROXY_KEY, "content-type": "application/json" },
    body: JSON.stringify({ contents: [{ parts: [{ text: "hi" }] }] }),
  });
  assert.equal(r.status, 200);
}

test("the /stat page shows marks and reasons, survives a refresh and resets", async () => {
  // One key exhausted for one model; other calls succeed.
  await fetch(`${fake}/_fake/behavior`, { method: "POST", body: JSON.stringify({ key: POOL[0], behavior: "per-day" }) });
  for (let i = 0; i < 4; i++) await generate("gemini-2.5-pro");
  await fetch(`${fake}/_fake/behavior`, { method: "POST", body: JSON.stringify({ key: POOL[0], behavior: "ok" }) });
  for (let i = 0; i < 3; i++) await generate("gemini-2.5-flash");

  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  page.on("dialog", (d) => d.accept());
  let r = await page.goto(`${proxy}/stat`);
  assert.equal(r.status(), 401, "without the key: the login page");
  await page.fill("#key", PROXY_KEY);
  await Promise.all([page.waitForURL(`${proxy}/stat`), page.click("button[type=submit]")]);
  assert.match(await page.title(), /keys/);
  const cookies = await page.context().cookies();
  const session = cookies.find((c) => c.name === "gp_session");
  assert.ok(session && session.httpOnly && session.sameSite === "Strict", "HttpOnly, SameSite=Strict session");

  const html = await page.content();
  for (const secret of [...POOL, PROXY_KEY]) assert.ok(!html.includes(secret), "a secret in the page");
  assert.ok(!/AIza[0-9A-Za-z_-]{35}/.test(html) && !/AQ\.[0-9A-Za-z_.-]{20,}/.test(html), "a key-shaped string in the page");
  const keyCells = await page.locator("tbody td.key code").allTextContents();
  assert.deepEqual(keyCells, ["AIza…0001", "AIza…0002", "AQ.B…ghij"]);
  // Columns: gemini-2.5-flash, gemini-2.5-pro; the totals row adds up 4 + 3 upstream-accepted calls plus the 429.
  const headers = await page.locator("thead th").allTextContents();
  assert.deepEqual(headers, ["key", "gemini-2.5-flash", "gemini-2.5-pro", "total"]);
  const totals = await page.locator("tfoot td").allTextContents();
  assert.deepEqual(totals, ["total", "3", "5", "8"]);

  const mark = page.locator("td.mark.exhausted");
  assert.equal(await mark.count(), 1, "one exhausted cell");
  assert.match(await mark.textContent(), /^1/);
  await page.screenshot({ path: join(shots, "stat-desktop.png"), fullPage: true });
  await mark.click();
  const reason = page.locator("#reason");
  await reason.waitFor({ state: "visible" });
  assert.match(await reason.textContent(), /exceeded your current quota/);
  assert.match(await reason.textContent(), /AIza…0001 · gemini-2.5-pro · exhausted/);
  await page.screenshot({ path: join(shots, "stat-desktop-reason.png"), fullPage: true });

  // A refresh keeps the opened reason open.
  await generate("gemini-2.5-flash");
  await page.click("#refresh");
  await page.waitForFunction(() => document.querySelector("tfoot td:last-child")?.textContent === "9");
  assert.ok(await reason.isVisible(), "the reason stays open across a refresh");

  const phone = await browser.newPage({ viewport: { width: 390, height: 844 }, isMobile: true });
  await phone.context().addCookies(cookies);
  await phone.goto(`${proxy}/stat`);
  await phone.screenshot({ path: join(shots, "stat-phone.png"), fullPage: true });
  const overflow = await phone.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `the phone page scrolls sideways by ${overflow}px (only the table should)`);

  // Reset now: the mark goes.
  await page.click("#reset");
  await page.waitForFunction(() => document.querySelectorAll("td.mark").length === 0);
  assert.ok(!(await reason.isVisible()));
  assert.deepEqual(await page.locator("tfoot td").allTextContents(), ["total", "0"]);

  // ?key= opens a session and lands on the clean URL.
  const fresh = await browser.newContext();
  const p2 = await fresh.newPage();
  await p2.goto(`${proxy}/stat?key=${encodeURIComponent(PROXY_KEY)}`);
  assert.equal(p2.url(), `${proxy}/stat`);
  assert.equal(await p2.locator("thead th").first().textContent(), "key");
  await fresh.close();
});

test("a cross-site form cannot reset", async () => {
  const page = await browser.newPage();
  const r = await page.request.post(`${proxy}/stat/reset`, { headers: { cookie: "gp_session=forged" }, form: { a: "b" } });
  assert.equal(r.status(), 401);
});
