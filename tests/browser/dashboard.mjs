// Drives the Sluice dashboard in Debian's headless Chromium through playwright-core (no bundled browser).
// Run by tests/heavy/dashboard_browser.rs, which starts Sluice, a real Envoy, backends and steady load first.
// Env: DASHBOARD_URL (required), CANARY (version name), SCREENSHOT (optional PNG path, taken SCREENSHOT_WAIT_MS
// after the chart checks).
// Exits 1 with a message on the first failed check.
import { chromium } from "playwright-core";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const url = process.env.DASHBOARD_URL;
const canary = process.env.CANARY || "v3";
const CHROMIUM = "/usr/bin/chromium";
// Without the background-networking flags Chromium reaches for Google services; on a closed network that fails.
const FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync"];
const TOKEN = "dashboard-test-token";

const check = (ok, msg) => { if (!ok) throw new Error(msg); };
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const profile = mkdtempSync(join(tmpdir(), "sluice-chromium-"));
let context;
try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM, headless: true, args: FLAGS, viewport: { width: 1280, height: 820 },
  });
  const page = context.pages()[0] || (await context.newPage());
  const consoleErrors = [];
  page.on("console", (m) => { if (m.type() === "error") consoleErrors.push(m.text()); });
  page.on("pageerror", (e) => consoleErrors.push(`page error: ${e.message}`));
  const mutations = [];
  // Dry runs (`?dryRun=All`: the confirm step's plan) change nothing; every other request but a GET does.
  page.on("request", (r) => { if (r.method() !== "GET" && !r.url().includes("dryRun=All")) mutations.push(r); });

  await page.goto(url, { waitUntil: "load" });
  await page.waitForSelector("#detail:not([hidden])", { timeout: 15000 });
  await page.waitForSelector(`#versions tr[data-version="${canary}"]`, { timeout: 15000 });
  console.log(`loaded: ${await page.textContent("#title")}`);

  // The charts move while traffic flows: more points, and each version's latest rate above zero.
  const series = async () => page.$$eval("#chart-rps polyline", (ls) =>
    ls.map((l) => ({ v: l.dataset.version, n: l.getAttribute("points").trim().split(/\s+/).filter(Boolean).length, last: Number(l.dataset.last) })));
  await sleep(2000);
  const before = await series();
  await sleep(3000);
  const after = await series();
  console.log(`chart before ${JSON.stringify(before)} after ${JSON.stringify(after)}`);
  check(after.length === 2, `two versions charted, got ${after.length}`);
  for (const s of after) {
    const b = before.find((x) => x.v === s.v);
    check(b && s.n >= b.n + 2, `the ${s.v} line gains points every second (${b && b.n} → ${s.n})`);
    check(s.last > 0, `${s.v} shows traffic (latest ${s.last} requests/s)`);
  }
  const success = await page.$$eval("#chart-success polyline", (ls) => ls.map((l) => Number(l.dataset.last)));
  check(success.every((x) => x > 0.99), `success rates near 1: ${success}`);
  if (process.env.SCREENSHOT) {
    await sleep(Number(process.env.SCREENSHOT_WAIT_MS || 0));
    await page.screenshot({ path: process.env.SCREENSHOT, fullPage: true });
    console.log(`screenshot: ${process.env.SCREENSHOT}`);
  }
  check(consoleErrors.length === 0, `console errors while loading and charting: ${consoleErrors.join(" | ")}`);

  // "Take over all traffic": a confirm step first (nothing sent), then the API call with the token.
  await page.fill("#token", TOKEN);
  await page.dispatchEvent("#token", "change");
  await page.click('button[data-action="promote"]');
  await page.waitForSelector("#confirm:not([hidden])");
  const question = await page.textContent("#confirm-text");
  check(/take over all traffic/i.test(question), `confirm asks first: "${question}"`);
  await sleep(300);
  check(mutations.length === 0, "nothing is sent before Confirm");
  await page.click("#confirm-no");
  check(await page.isHidden("#confirm"), "Cancel closes the confirm step");
  await page.click('button[data-action="promote"]');
  const [request] = await Promise.all([
    page.waitForRequest((r) => r.method() === "POST" && r.url().endsWith("/promote")),
    page.click("#confirm-yes"),
  ]);
  check(request.headers()["authorization"] === `Bearer ${TOKEN}`, `the token goes along: ${request.headers()["authorization"]}`);
  await page.waitForFunction(() => document.querySelector("#summary").textContent.includes("phase Promoted"), null, { timeout: 10000 });
  console.log(`after promote: ${await page.textContent("#summary")}`);
  check(consoleErrors.length === 0, `console errors: ${consoleErrors.join(" | ")}`);

  // An API refusal is shown, not swallowed: a weight on a promoted release is refused (409).
  await page.fill("#weight", "30");
  await page.click('button[data-action="weight"]');
  await page.click("#confirm-yes");
  await page.waitForSelector("#error:not([hidden])", { timeout: 5000 });
  const error = await page.textContent("#error-text");
  console.log(`error shown: ${error}`);
  check(error.includes("HTTP 409") && error.includes("no longer split"), `the API's refusal is shown: "${error}"`);
  console.log("dashboard: all checks passed");
} catch (err) {
  console.error(`dashboard check failed: ${err.message}`);
  process.exitCode = 1;
} finally {
  if (context) await context.close();
  rmSync(profile, { recursive: true, force: true });
}
