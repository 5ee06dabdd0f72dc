// What the browser scripts share: Debian's Chromium launched headless through playwright-core (no bundled
// browser) in a fresh profile, and the checkpoints a test answers (tests/common/browser.rs).
import { chromium } from "playwright-core";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";

// Without the background-networking flags Chromium reaches for Google services; on a closed network that fails.
const FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync"];

export const check = (ok, msg) => { if (!ok) throw new Error(msg); };
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/// Runs `steps(page)` in a new headless Chromium with a throwaway profile; exits 1 with the failed check's message
/// (and what `onFailure(page)` says the page showed).
export async function withBrowser(viewport, steps, onFailure = async () => "") {
  const profile = mkdtempSync(join(tmpdir(), "sluice-chromium-"));
  let context, page;
  try {
    context = await chromium.launchPersistentContext(profile, {
      executablePath: "/usr/bin/chromium", headless: true, args: FLAGS, viewport,
    });
    page = context.pages()[0] || (await context.newPage());
    await steps(page);
  } catch (err) {
    console.error(`check failed: ${err.message}`);
    if (page) console.error(`the page showed: ${await onFailure(page).catch(() => "")}`);
    process.exitCode = 1;
  } finally {
    if (context) await context.close();
    rmSync(profile, { recursive: true, force: true });
  }
}

let answers;
/// Stops until the test has checked the mesh: prints `@checkpoint NAME`, waits for `ok` on stdin.
export async function checkpoint(name) {
  answers = answers || createInterface({ input: process.stdin })[Symbol.asyncIterator]();
  console.log(`@checkpoint ${name}`);
  const { value } = await answers.next();
  check(value === "ok", `checkpoint ${name}: the test answered ${value}`);
}

/// The visible field errors, the error bar and the task's title and progress: what a failure message shows.
export const shown = (page) => page.evaluate(() =>
  [...document.querySelectorAll(".field-error:not([hidden]), #error:not([hidden]), #rollout-text, #title, #deliver-status, #policy-yaml")]
    .map((e) => `${e.id || e.className}: ${e.textContent.trim().replace(/\s+/g, " ")}`).join(" | "));
