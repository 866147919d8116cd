// The /stat dashboard in a real browser: two client keys (one over its
// request quota) and calls over two models; the page shows each client's
// use against its quotas and the hourly charts, without running a script
// for them. Screenshots: target/screenshots/dashboard-*.png.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { launchBrowser, shots, startProxy, stopAll } from "./harness.mjs";

const POOL = ["AIzaSyDASHBOARDpoolKEY000000000000000001", "AIzaSyDASHBOARDpoolKEY000000000000000002"];
const PROXY_KEY = "AQ.dashboardPROXYkey0123456789abcdefXY";
const ADMIN_KEY = "AQ.dashboardADMINkey0123456789abcdefXY";
let proxy, browser;

before(async () => {
  ({ proxy } = await startProxy({ API_KEYS: POOL.join(","), PROXY_API_KEY: PROXY_KEY, ADMIN_API_KEY: ADMIN_KEY }));
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  stopAll();
});

async function createClient(body) {
  const r = await fetch(`${proxy}/admin/clients`, {
    method: "POST", headers: { authorization: `Bearer ${ADMIN_KEY}`, "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  assert.equal(r.status, 201);
  return (await r.json()).secret;
}

async function generate(key, model) {
  const r = await fetch(`${proxy}/v1beta/models/${model}:generateContent`, {
    method: "POST", headers: { "x-goog-api-key": key, "content-type": "application/json" },
    body: JSON.stringify({ contents: [{ parts: [{ text: "hi" }] }] }),
  });
  await r.arrayBuffer();
  return r.status;
}

test("the dashboard shows clients against their quotas and calls and tokens per hour", async () => {
  const capped = await createClient({ name: "capped laptop", daily_requests: 2 });
  const team = await createClient({ name: "team tools", daily_tokens: 1000000, models: ["gemini-2.5-flash"] });
  assert.equal(await generate(capped, "gemini-2.5-pro"), 200);
  assert.equal(await generate(capped, "gemini-2.5-flash"), 200);
  assert.equal(await generate(capped, "gemini-2.5-flash"), 429, "over its request quota");
  for (let i = 0; i < 3; i++) assert.equal(await generate(team, "gemini-2.5-flash"), 200);
  assert.equal(await generate(team, "gemini-2.5-pro"), 403, "a model it may not use");

  const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, javaScriptEnabled: false });
  const page = await context.newPage();
  // Without scripts: the page, its tables and its charts are plain HTML.
  const r = await page.goto(`${proxy}/stat?key=${encodeURIComponent(PROXY_KEY)}`);
  assert.equal(r.status(), 200);
  const html = await page.content();
  for (const secret of [capped, team, PROXY_KEY, ADMIN_KEY, ...POOL]) assert.ok(!html.includes(secret), "a secret in the page");
  const rows = await page.locator("#clients tbody tr").allInnerTexts();
  assert.equal(rows.length, 2);
  const cappedRow = rows.find((t) => t.includes("capped laptop"));
  assert.ok(cappedRow && cappedRow.includes("2 / 2"), cappedRow);
  assert.equal(await page.locator("#clients td.over").count(), 1, "the used-up quota is marked");
  const teamRow = rows.find((t) => t.includes("team tools"));
  assert.ok(teamRow && /\b3\b/.test(teamRow) && teamRow.includes("gemini-2.5-flash"), teamRow);
  // Two charts, each with this hour's bars (one per model) and a tokens line.
  const charts = page.locator("figure.chart svg");
  assert.equal(await charts.count(), 2);
  for (let i = 0; i < 2; i++) {
    const chart = charts.nth(i);
    assert.ok(await chart.isVisible());
    assert.equal(await chart.locator("rect.bar").count(), 2, "a bar per model this hour");
    assert.equal(await chart.locator("polyline.tokens").count(), 1);
    const box = await chart.boundingBox();
    assert.ok(box.width > 600 && box.height > 100, JSON.stringify(box));
  }
  const titles = await page.locator("figure.chart rect.bar title").allTextContents();
  assert.ok(titles.some((t) => /gemini-2\.5-flash .*: 4 calls, \d+ tokens/.test(t)), titles.join(" | "));
  await page.screenshot({ path: join(shots, "dashboard-desktop.png"), fullPage: true });
  const phone = await context.browser().newPage({ viewport: { width: 390, height: 844 }, javaScriptEnabled: false });
  await phone.goto(`${proxy}/stat?key=${encodeURIComponent(PROXY_KEY)}`);
  const phoneChart = await phone.locator("figure.chart svg").first().boundingBox();
  assert.ok(phoneChart.width <= 390, "the chart fits a phone");
  await phone.screenshot({ path: join(shots, "dashboard-phone.png"), fullPage: true });
  await context.close();
});
