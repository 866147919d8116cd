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

test("the page follows Accept-Language (Chinese) and its switch, which is remembered", async () => {
  const context = await browser.newContext({ locale: "zh-CN", viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  // The sign-in form speaks the browser's language too.
  let r = await page.goto(`${proxy}/stat`);
  assert.equal(r.status(), 401);
  assert.equal(await page.locator("html").getAttribute("lang"), "zh-CN");
  assert.equal(await page.locator("label[for=key]").textContent(), "代理密钥（PROXY_API_KEY）");
  await page.fill("#key", PROXY_KEY);
  await Promise.all([page.waitForURL(`${proxy}/stat`), page.click("button[type=submit]")]);
  assert.equal(await page.locator("html").getAttribute("lang"), "zh-CN");
  assert.equal(await page.title(), "gemini-proxy · 密钥");
  assert.equal(await page.locator("#refresh").textContent(), "刷新");
  assert.equal(await page.locator("#history h2").textContent(), "每小时调用次数与 token 数");
  assert.deepEqual((await page.locator("figure.chart figcaption").allTextContents()).map((t) => t.split("：")[0]), ["最近 24 小时", "最近 7 天"]);
  assert.match(await page.locator("#meta").textContent(), /个密钥 · .* 每日配额重置于 /);
  // The script's countdowns speak it as well.
  await page.waitForFunction(() => /^\d/.test(document.querySelector("#meta [data-until]").textContent));
  await page.screenshot({ path: join(shots, "stat-zh.png"), fullPage: true });

  // The switch: English, and it stays English on the next visit (a cookie),
  // though the browser still prefers Chinese.
  await Promise.all([page.waitForURL(/lang=en/), page.click("#lang")]);
  assert.equal(await page.locator("html").getAttribute("lang"), "en");
  assert.equal(await page.locator("#refresh").textContent(), "Refresh");
  const again = await context.newPage();
  await again.goto(`${proxy}/stat`);
  assert.equal(await again.locator("html").getAttribute("lang"), "en");
  assert.equal(await again.locator("#history h2").textContent(), "Calls and tokens per hour");
  await again.screenshot({ path: join(shots, "stat-en-switched.png"), fullPage: true });
  // And back to Chinese.
  await Promise.all([again.waitForURL(/lang=zh-CN/), again.click("#lang")]);
  const third = await context.newPage();
  await third.goto(`${proxy}/stat`);
  assert.equal(await third.locator("html").getAttribute("lang"), "zh-CN");
  await context.close();
});
