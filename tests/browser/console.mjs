// Drives the Sluice release console through the grayscale tutorial in Debian's headless Chromium (playwright-core,
// no bundled browser), only through the page. Run by tests/heavy/console_browser.rs, which starts Sluice, a real
// Envoy, the backends and continuous load, and checks the mesh whenever this script prints `@checkpoint NAME`
// (it answers `ok` on stdin before the script goes on).
// Env: CONSOLE_URL (required), SCREENSHOTS (optional directory: a PNG of each step).
// Exits 1 with a message on the first failed check.
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { check, checkpoint, shown, withBrowser } from "./lib.mjs";

const url = process.env.CONSOLE_URL;
const api = `${new URL(url).origin}/api/v1`;
const shots = process.env.SCREENSHOTS;

await withBrowser({ width: 1280, height: 1000 }, async (page) => {
  const consoleErrors = [];
  // Chromium logs every 4xx answer as "Failed to load resource"; the page asks for some on purpose (a task name
  // free? a dry run refused?), so those are left out here and `refused` below checks the changes.
  page.on("console", (m) => {
    if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) consoleErrors.push(m.text());
  });
  page.on("pageerror", (e) => consoleErrors.push(`page error: ${e.message}`));
  // What changes the mesh (every request but GETs and dry runs), and which of those the API refused.
  const changes = [];
  const refused = [];
  page.on("request", (r) => { if (r.method() !== "GET" && !r.url().includes("dryRun=All")) changes.push(`${r.method()} ${r.url()}`); });
  page.on("response", (res) => {
    const r = res.request();
    if (r.method() !== "GET" && !r.url().includes("dryRun=All") && res.status() >= 400) refused.push(`${r.method()} ${r.url()} → ${res.status()}`);
  });
  let shot = 0;
  const screenshot = async (name) => {
    if (!shots) return;
    mkdirSync(shots, { recursive: true });
    const path = join(shots, `${String(++shot).padStart(2, "0")}-${name}.png`);
    await page.screenshot({ path, fullPage: true });
    console.log(`screenshot: ${path}`);
  };
  const visibleError = async (sel, includes) => {
    await page.waitForSelector(`${sel}:not([hidden])`, { timeout: 5000 });
    const text = await page.textContent(sel);
    check(includes.every((w) => text.includes(w)), `${sel} says “${text}”, expected ${JSON.stringify(includes)}`);
    console.log(`error next to the field (${sel}): ${text}`);
  };

  // ---- Create Release Task, from an empty list ----------------------------------------------------------------
  await page.goto(url, { waitUntil: "load" });
  await page.waitForFunction(() => document.querySelector("#releases").textContent.includes("no release tasks"));
  await page.click("#new-task");
  await page.waitForSelector('#service option[value="reviews"]', { state: "attached" });
  await page.selectOption("#service", "reviews");
  check(await page.inputValue("#stable") === "v1", "the stable version defaults to v1");
  check(await page.inputValue("#canary") === "v3", "the new version defaults to v3");
  const workload = await page.textContent("#workload tbody");
  check(workload.includes("v1") && workload.includes("v3") && workload.includes("1/1"), `the workload table lists the versions: ${workload}`);

  // Bad input: a name that is no DNS label (checked as it is typed), a version the Service does not have.
  await page.fill("#task-name", "Reviews_V3");
  await visibleError("#task-name-error", ["not a DNS label"]);
  await page.fill("#canary", "v9");
  await page.click("#release");
  await visibleError("#canary-error", ["v9", "no endpoints"]);
  await visibleError("#task-name-error", ["not a DNS label"]);
  check(changes.length === 0, `nothing is sent while the form has errors: ${changes}`);

  // A 409 from the API: another task took the Service after the page read the inventory.
  await page.fill("#task-name", "reviews-v3");
  await page.fill("#canary", "v3");
  const rival = `${api}/namespaces/default/releases/reviews-rival`;
  const put = await fetch(rival, { method: "PUT", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ spec: { service: "reviews", stable: "v1", canary: "v3" } }) });
  check(put.ok, `the rival task is created: ${put.status}`);
  await page.click("#release");
  await visibleError("#create-error", ["HTTP 409", "already has release policy"]);
  check((await fetch(rival, { method: "DELETE" })).ok, "the rival task is removed");
  await screenshot("create-task");
  await page.click("#release");

  // ---- Release progress, then the traffic policy: 20% by ratio ------------------------------------------------
  await page.waitForFunction(() => document.querySelector("#title").textContent.includes("default/reviews-v3"));
  await page.waitForFunction(() => document.querySelector("#rollout-text").textContent.includes("1 of 1 endpoints ready (100%)"));
  check(await page.$eval("#rollout", (p) => p.value === p.max), "the progress bar is full");
  check(!(await page.$eval("#policy-fields", (f) => f.disabled)), "the policy form unlocks once v3 is ready");
  await page.fill("#ratio", "101");
  await visibleError("#ratio-error", ["101", "between 0 and 100"]);
  check(await page.isDisabled("#deliver"), "Deliver is disabled while the policy has errors");
  await page.fill("#ratio", "20");
  check(await page.inputValue("#ratio-slider") === "20", "the slider follows the number");
  const ratioYaml = await page.textContent("#policy-yaml");
  check(ratioYaml.includes("canaryWeight: 2000") && ratioYaml.includes("kind: ReleasePolicy"), `the preview is the policy:\n${ratioYaml}`);
  await screenshot("policy-ratio");
  await page.click("#deliver");
  await page.waitForFunction(() => document.querySelector("#deliver-status").textContent.startsWith("delivered"));
  await checkpoint("ratio-20");

  // ---- Edit the same task's policy: by request content, Windows only -------------------------------------------
  await page.check("#kind-content");
  await page.click("#rules .add-condition");
  await page.fill("#rules .condition .c-name", "x-canary");
  await page.selectOption("#rules .condition .c-op", "regex");
  await page.fill("#rules .condition .c-value", "(?=a)b");
  await visibleError("#rules .condition .condition-error", ["regex", "RE2"]);
  // Only RE2 refuses a repeat over 1,000 (JavaScript takes it): the dry run's error lands next to the condition.
  await page.fill("#rules .condition .c-value", "a{1001}");
  await page.click("#deliver");
  await visibleError("#rules .condition .condition-error", ["spec.traffic.rules[0].match.headers[0].regex"]);
  await page.click("#rules .remove-condition");
  await page.check('#rules [data-os="Windows"]');
  const contentYaml = await page.textContent("#policy-yaml");
  check(contentYaml.includes("clientOS:") && contentYaml.includes("- Windows") && contentYaml.includes("canaryWeight: 0"), `the preview:\n${contentYaml}`);
  await screenshot("policy-content");
  await page.click("#deliver");
  await page.waitForFunction(() => document.querySelector("#deliver-status").textContent.startsWith("delivered"));
  await checkpoint("windows");

  // ---- Take Over All Traffic, then End Task: each confirm step shows the plan first ----------------------------
  await page.click('button[data-action="promote"]');
  await page.waitForSelector("#confirm:not([hidden])");
  const promotePlan = await page.textContent("#confirm-plan");
  check(promotePlan.includes("v3 keeps serving") && promotePlan.includes("v3 100%"), `the promote plan: ${promotePlan}`);
  await page.click("#confirm-yes");
  await page.waitForFunction(() => document.querySelector("#summary").textContent.includes("phase Promoted"));
  await checkpoint("takeover");

  await page.click('button[data-action="finalize"]');
  await page.waitForSelector("#confirm:not([hidden])");
  const endPlan = await page.textContent("#confirm-plan");
  console.log(`End task plan: ${endPlan}`);
  check(endPlan.includes("proxies drop the cluster outbound|9080|v1|reviews.default.svc.cluster.local"), `the plan names v1's cluster: ${endPlan}`);
  check(endPlan.includes("the workloads of v1 are left as they are"), `the plan says what becomes of v1's workloads: ${endPlan}`);
  await screenshot("end-task");
  await page.click("#confirm-yes");
  await page.waitForFunction(() => document.querySelector("#summary").textContent.includes("phase Finalized"));
  await screenshot("ended");
  await checkpoint("ended");

  // ---- Keyboard only: a second task (details: v1 → v2) with Tab, Enter and typed text ---------------------------
  await page.evaluate(() => document.activeElement && document.activeElement.blur());
  const tabTo = async (sel) => {
    for (let i = 0; i < 40; i++) {
      await page.keyboard.press("Tab");
      if (await page.evaluate((s) => document.activeElement && document.activeElement.matches(s), sel)) return;
    }
    throw new Error(`Tab never reaches ${sel}`);
  };
  await tabTo("#new-task");
  await page.keyboard.press("Enter");
  // The form keeps the options of the first task's form until the fresh inventory arrives, and then takes focus:
  // wait for the focus (what a keyboard user waits for), not for an option that may be the old one.
  const focused = await page
    .waitForFunction(() => document.activeElement && document.activeElement.id === "task-name", null, { timeout: 10000 })
    .then(() => true, () => false);
  check(focused, "the form opens on the task name");
  await page.waitForSelector('#service option[value="details"]', { state: "attached" });
  await page.keyboard.type("details-v2");
  await tabTo("#service");
  check(await page.inputValue("#service") === "details", "details is the Service without a task");
  await tabTo("#canary");
  check(await page.inputValue("#canary") === "v2", "the new version is v2");
  await tabTo("#release");
  await page.keyboard.press("Enter");
  await page.waitForFunction(() => document.querySelector("#title").textContent.includes("default/details-v2"));
  await checkpoint("keyboard");

  check(refused.length === 0, `the API refused a change the page sent: ${refused.join(" | ")}`);
  check(consoleErrors.length === 0, `console errors: ${consoleErrors.join(" | ")}`);
  console.log(`console: all checks passed (${changes.length} changes sent)`);
}, shown);
process.exit();
