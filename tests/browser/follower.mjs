// The dashboard served by a replica that does not lead (Kubernetes mode), in Debian's headless Chromium through
// playwright-core: its buttons send to the follower, which forwards to the leader. Run by
// tests/heavy/kube_dashboard_follower.rs. Env: DASHBOARD_URL, TOKEN (the replicas' --api-token-file).
// Exits 1 with a message on the first failed check.
import { chromium } from "playwright-core";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const url = process.env.DASHBOARD_URL;
const token = process.env.TOKEN;
const FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync"];
const check = (ok, msg) => { if (!ok) throw new Error(msg); };

const profile = mkdtempSync(join(tmpdir(), "sluice-chromium-"));
let context;
try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: "/usr/bin/chromium", headless: true, args: FLAGS, viewport: { width: 1280, height: 820 },
  });
  const page = context.pages()[0] || (await context.newPage());
  const consoleErrors = [];
  page.on("console", (m) => { if (m.type() === "error") consoleErrors.push(m.text()); });
  page.on("pageerror", (e) => consoleErrors.push(`page error: ${e.message}`));
  await page.goto(url, { waitUntil: "load" });
  await page.waitForSelector('#versions tr[data-version="v3"]', { timeout: 15000 });
  await page.fill("#token", token);
  await page.dispatchEvent("#token", "change");
  const canaryCell = () => page.textContent('#versions tr[data-version="v3"] td:nth-child(3)');

  // Set weight: the browser's own request (Origin, Sec-Fetch-Site: same-origin) to the follower, answered 200.
  await page.fill("#weight", "30");
  await page.click('button[data-action="weight"]');
  const [response] = await Promise.all([
    page.waitForResponse((r) => r.request().method() === "POST" && r.url().endsWith("/weight")),
    page.click("#confirm-yes"),
  ]);
  const sent = await response.request().allHeaders();
  console.log(`weight: HTTP ${response.status()}, sent origin=${sent["origin"]} sec-fetch-site=${sent["sec-fetch-site"]}`);
  check(response.status() === 200, `the follower answers the weight with 200, got ${response.status()}: ${await response.text()}`);
  check(sent["authorization"] === `Bearer ${token}`, "the token goes along");
  await page.waitForFunction(() => document.querySelector('#versions tr[data-version="v3"] td:nth-child(3)').textContent === "30%", null, { timeout: 10000 });
  console.log(`after the weight: v3 ${await canaryCell()}`);

  // Take over all traffic.
  await page.click('button[data-action="promote"]');
  const [promoted] = await Promise.all([
    page.waitForResponse((r) => r.request().method() === "POST" && r.url().endsWith("/promote")),
    page.click("#confirm-yes"),
  ]);
  check(promoted.status() === 200, `promote answered ${promoted.status()}: ${await promoted.text()}`);
  await page.waitForFunction(() => document.querySelector("#summary").textContent.includes("phase Promoted"), null, { timeout: 10000 });
  console.log(`after promote: ${await page.textContent("#summary")}`);
  check(consoleErrors.length === 0, `console errors: ${consoleErrors.join(" | ")}`);

  // The leader's refusal comes back through the follower and is shown.
  await page.fill("#weight", "40");
  await page.click('button[data-action="weight"]');
  await page.click("#confirm-yes");
  await page.waitForSelector("#error:not([hidden])", { timeout: 10000 });
  const error = await page.textContent("#error-text");
  console.log(`error shown: ${error}`);
  check(error.includes("HTTP 409") && error.includes("no longer split"), `the leader's refusal is shown: "${error}"`);
  console.log("follower dashboard: all checks passed");
} catch (err) {
  console.error(`follower dashboard check failed: ${err.message}`);
  process.exitCode = 1;
} finally {
  if (context) await context.close();
  rmSync(profile, { recursive: true, force: true });
}
