// Drives the Sluice release console in Kubernetes mode (headless Chromium, playwright-core): create a task that
// deploys v3 from the stable Deployment with a new image tag and 2 replicas, watch the progress bar go 0/2 → 1/2
// → 2/2 while the policy form stays locked, deliver 20% once it unlocks, take over and end the task (v1's
// Deployment scaled to zero, as the form asked). Run by tests/kube/console.rs, which
// plays the Deployment controller in kmock whenever this script prints `@checkpoint NAME` (it answers `ok`).
// Env: CONSOLE_URL (required), SCREENSHOTS (optional directory). Exits 1 with a message on the first failed check.
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { check, checkpoint, shown, withBrowser } from "./lib.mjs";

const url = process.env.CONSOLE_URL;
const shots = process.env.SCREENSHOTS;

await withBrowser({ width: 1280, height: 1000 }, async (page) => {
  const errors = [];
  page.on("pageerror", (e) => errors.push(`page error: ${e.message}`));
  const refused = [];
  page.on("response", (res) => {
    const r = res.request();
    if (r.method() !== "GET" && !r.url().includes("dryRun=All") && res.status() >= 400) refused.push(`${r.method()} ${r.url()} → ${res.status()}`);
  });
  const progress = () => page.textContent("#rollout-text");
  const locked = () => page.$eval("#policy-fields", (f) => f.disabled);

  await page.goto(url, { waitUntil: "load" });
  await page.click("#new-task");
  await page.waitForSelector('#service option[value="reviews"]', { state: "attached" });
  await page.fill("#task-name", "reviews-v3");
  await page.selectOption("#service", "reviews");
  check(!(await page.isDisabled("#mode-deploy")), `deploying is offered: ${await page.textContent("#deploy-unavailable")}`);
  await page.check("#mode-deploy");
  check(await page.inputValue("#canary") === "v2", "the next version is suggested");
  await page.fill("#canary", "v3");
  const from = await page.textContent("#deploy-from");
  check(from.includes("reviews-v1"), `it deploys from the stable Deployment: ${from}`);
  // The same image is no new version: refused next to the images, nothing sent.
  await page.click("#release");
  await page.waitForSelector("#deploy-images-error:not([hidden])");
  console.log(`error next to the images: ${await page.textContent("#deploy-images-error")}`);
  await page.fill('.d-image[data-container="reviews"]', "istio/examples-bookinfo-reviews-v3:1.20");
  check(await page.inputValue("#deploy-replicas") === "2", "the replica count defaults to the stable's");
  check(await page.isVisible("#end-fields"), "Kubernetes mode asks what becomes of the loser's Deployment");
  await page.selectOption("#loser", "ScaleToZero");
  if (shots) { mkdirSync(shots, { recursive: true }); await page.screenshot({ path: join(shots, "06-deploy-task.png"), fullPage: true }); }
  await page.click("#release");

  await page.waitForFunction(() => document.querySelector("#title").textContent.includes("default/reviews-v3"));
  await page.waitForFunction(() => document.querySelector("#rollout-text").textContent.includes("0/2 replicas ready"), null, { timeout: 15000 });
  console.log(`progress: ${await progress()}`);
  check(await locked(), "the policy form is locked while nothing is ready");
  await checkpoint("deployed");

  await page.waitForFunction(() => document.querySelector("#rollout-text").textContent.includes("1/2 replicas ready"), null, { timeout: 15000 });
  console.log(`progress: ${await progress()}`);
  check(await page.$eval("#rollout", (p) => p.value === 1 && p.max === 2), "the bar is half full");
  check(await locked(), "the policy form is locked at 1 of 2");
  await checkpoint("one-ready");

  await page.waitForFunction(() => document.querySelector("#rollout-text").textContent.includes("2/2 replicas ready"), null, { timeout: 15000 });
  await page.waitForFunction(() => !document.querySelector("#policy-fields").disabled, null, { timeout: 15000 });
  console.log(`progress: ${await progress()}; the policy form is unlocked`);
  if (shots) await page.screenshot({ path: join(shots, "07-rolled-out.png"), fullPage: true });
  await page.fill("#ratio", "20");
  await page.click("#deliver");
  await page.waitForFunction(() => document.querySelector("#deliver-status").textContent.startsWith("delivered"), null, { timeout: 15000 });
  await checkpoint("delivered");

  // Take over, then End task: the plan names what happens to v1's Deployment before anything does.
  await page.click('button[data-action="promote"]');
  await page.waitForSelector("#confirm:not([hidden])");
  await page.click("#confirm-yes");
  await page.waitForFunction(() => document.querySelector("#summary").textContent.includes("phase Promoted"));
  await page.click('button[data-action="finalize"]');
  await page.waitForSelector("#confirm:not([hidden])");
  const plan = await page.textContent("#confirm-plan");
  console.log(`End task plan: ${plan}`);
  check(plan.includes("the Deployment of v1 is scaled to 0 replicas"), `the plan says v1's Deployment is scaled to 0: ${plan}`);
  await page.click("#confirm-yes");
  await page.waitForFunction(() => document.querySelector("#summary").textContent.includes("phase Finalized"));
  await checkpoint("ended");

  check(refused.length === 0, `the API refused a change the page sent: ${refused.join(" | ")}`);
  check(errors.length === 0, `page errors: ${errors.join(" | ")}`);
  console.log("console (Kubernetes): all checks passed");
}, shown);
process.exit();
