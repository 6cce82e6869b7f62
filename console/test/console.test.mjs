// The console's browser test (API.md §14): a real hookd on 127.0.0.1, two real receivers, and
// Debian's chromium driven by playwright-core. It fails on any request to another origin, any
// CSP violation and any JavaScript error, and writes the README's screenshots.
//
// usage: HOOKD_BIN=target/debug/hookd node console/test/console.test.mjs
import { chromium } from "playwright-core";
import { spawn } from "node:child_process";
import http from "node:http";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import assert from "node:assert/strict";

const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), "../..");
const HOOKD = process.env.HOOKD_BIN || path.join(ROOT, "target/debug/hookd");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const SHOTS = path.join(ROOT, "docs");
const ADMIN = "console-test-admin-token";
const WAIT = 15_000;

function receiver(status) {
  const state = { status, count: 0 };
  const server = http.createServer((req, res) => {
    req.resume();
    req.on("end", () => {
      state.count += 1;
      res.writeHead(state.status, { "Content-Type": "text/plain" });
      res.end(`answered ${state.status}`);
    });
  });
  return new Promise((resolve) =>
    server.listen(0, "127.0.0.1", () => {
      state.url = `http://127.0.0.1:${server.address().port}/hook`;
      state.close = () => server.close();
      resolve(state);
    }),
  );
}

function startHookd() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "hookd-console-"));
  const child = spawn(HOOKD, ["serve"], {
    env: {
      PATH: process.env.PATH,
      HOOKD_SERVER__LISTEN: "127.0.0.1:0",
      HOOKD_STORAGE__PATH: path.join(dir, "data"),
      HOOKD_AUTH__ADMIN_TOKENS: JSON.stringify([ADMIN]),
      HOOKD_AUTH__INGEST_TOKENS: JSON.stringify(["console-test-ingest"]),
      HOOKD_DELIVERY__ALLOW_HTTP: "true",
      HOOKD_DELIVERY__ALLOW_PRIVATE_NETWORKS: "true",
      HOOKD_DELIVERY__RETRY_SCHEDULE: '["100ms","100ms"]',
      HOOKD_DELIVERY__RETRY_JITTER: "0",
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let log = "";
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`hookd did not start:\n${log}`)), 30_000);
    const onData = (chunk) => {
      log += chunk;
      const m = log.match(/listening on (127\.0\.0\.1:\d+)/);
      if (m && /ready/.test(log)) {
        clearTimeout(timer);
        resolve({ base: `http://${m[1]}`, child, dir, log: () => log });
      }
    };
    child.stdout.on("data", onData);
    child.stderr.on("data", onData);
    child.on("exit", (code) => reject(new Error(`hookd exited ${code}:\n${log}`)));
  });
}

async function api(base, method, p, body) {
  const r = await fetch(base + p, {
    method,
    headers: { Authorization: `Bearer ${ADMIN}`, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  if (!r.ok) throw new Error(`${method} ${p}: ${r.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

async function until(what, fn, within = WAIT) {
  const end = Date.now() + within;
  for (;;) {
    if (await fn()) return;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/// Presses Tab until `selector` has the focus (keyboard only); fails after `max` presses.
async function tabTo(page, selector, max = 80) {
  for (let i = 0; i < max; i++) {
    if (await page.evaluate((s) => document.activeElement?.matches(s) ?? false, selector)) return;
    await page.keyboard.press("Tab");
  }
  throw new Error(`Tab never reached ${selector}`);
}

/// Holds hookd's answers to the requests `matches` picks for a second before letting them
/// through, as a loaded machine may: a view asked for earlier then answers after one asked
/// for later. Returns when the held answer came, and a function that stops holding.
async function holdAnswers(page, matches) {
  const hold = async (route) => {
    await new Promise((r) => setTimeout(r, 1000));
    await route.continue();
  };
  await page.route(matches, hold);
  const answered = page.waitForResponse((r) => matches(new URL(r.url())), { timeout: WAIT })
    .then(() => Date.now());
  return { answered, stop: () => page.unroute(matches, hold) };
}

/// Watches a page: requests leaving the origin, console errors (CSP violations are among
/// them), uncaught exceptions, and full page loads (a live update must not need one).
function watch(page, base) {
  const problems = [];
  let loads = 0;
  page.on("request", (r) => {
    const u = new URL(r.url());
    if (u.origin !== base) problems.push(`request to another origin: ${r.url()}`);
  });
  page.on("console", (m) => {
    // The wrong-token step's 401 is the refusal the test asks for, not a page error.
    const refused = /Failed to load resource: .* 401 \(Unauthorized\)/.test(m.text());
    if (m.type() === "error" && !refused) problems.push(`console error: ${m.text()}`);
  });
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  page.on("load", () => { loads += 1; });
  return { problems, loads: () => loads };
}

async function flow(browser, hookd, receivers, { viewport, keyboard, shots }) {
  const { base } = hookd;
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  const watched = watch(page, base);
  const click = async (selector) => {
    if (keyboard) {
      await tabTo(page, selector);
      await page.keyboard.press("Enter");
    } else {
      await page.click(selector);
    }
  };
  // `shots`: which views to photograph (all of them, or a list).
  const shot = async (name) => {
    if (shots === true || (Array.isArray(shots) && shots.includes(name))) {
      const file = keyboard ? `console-phone-${name}.png` : `console-${name}.png`;
      await page.screenshot({ path: path.join(SHOTS, file), fullPage: true });
    }
  };

  const response = await page.goto(`${base}/console`);
  const headers = response.headers();
  assert.match(headers["content-security-policy"], /default-src 'self'/);
  assert.match(headers["content-security-policy"], /frame-ancestors 'none'/);
  assert.equal(headers["x-content-type-options"], "nosniff");
  assert.equal(headers["referrer-policy"], "no-referrer");

  // A wrong token: a clear message, still on the login form.
  await page.locator("#token").fill("not-the-token");
  if (keyboard) await page.keyboard.press("Enter");
  else await page.click("#login-form button[type=submit]");
  await page.locator("#status", { hasText: "token was refused" }).waitFor({ timeout: WAIT });
  assert.ok(await page.locator("#login-form").isVisible());
  await shot("login");

  await page.locator("#token").fill(ADMIN);
  if (keyboard) await page.keyboard.press("Enter");
  else await page.click("#login-form button[type=submit]");
  await page.locator("#endpoints tbody tr").nth(1).waitFor({ timeout: WAIT });
  assert.equal(await page.locator("#endpoints tbody tr").count(), 2);
  const failingRow = page.locator(`tr[data-endpoint="${receivers.failingId}"]`);
  await failingRow.locator(".s-failing").waitFor({ timeout: WAIT });
  assert.match(await failingRow.innerText(), /status 500/);
  await shot("endpoints");

  // The failing endpoint, its failed deliveries.
  await click(`a[href="#/endpoints/${receivers.failingId}"]`);
  await page.locator("#status-filter").waitFor({ timeout: WAIT });
  // The filter passes through "pending" on its way, and hookd's answer for "pending" comes
  // last: the list must still be the failed deliveries once it has come.
  const pending = await holdAnswers(page, (u) =>
    u.pathname.endsWith("/deliveries") && u.searchParams.get("status") === "pending");
  if (keyboard) {
    await tabTo(page, "#status-filter");
    await page.keyboard.press("ArrowDown"); // pending
    await page.keyboard.press("ArrowDown"); // succeeded
    await page.keyboard.press("ArrowDown"); // failed
  } else {
    await page.selectOption("#status-filter", "pending");
    await page.selectOption("#status-filter", "failed");
  }
  const onlyFailed = async () => {
    const statuses = await page.locator("#deliveries tbody .badge").allInnerTexts();
    return statuses.length > 0 && statuses.every((s) => s === "failed");
  };
  await until("only failed deliveries listed", onlyFailed);
  await pending.answered;
  await page.waitForTimeout(300);
  await pending.stop();
  assert.ok(await onlyFailed(), "the late answer for pending replaced the failed deliveries");
  assert.equal(await page.locator("#status-filter").inputValue(), "failed");
  await shot("endpoint");

  // One failed delivery, its attempts; retry it with the receiver fixed, and see the
  // success arrive without a reload.
  const first = await page.locator("#deliveries tbody tr").first().getAttribute("data-delivery");
  await click(`a[href="#/deliveries/${first}"]`);
  await page.locator("#attempts tbody tr").nth(1).waitFor({ timeout: WAIT });
  assert.ok((await page.locator("#attempts tbody tr").count()) >= 2);
  await shot("delivery");
  receivers.failing.status = 200;
  const loadsBefore = watched.loads();
  await click("#retry");
  await page.locator("#delivery-status .s-succeeded").waitFor({ timeout: WAIT });
  assert.equal(watched.loads(), loadsBefore, "the success came live, without a reload");

  // Pause and resume, a test send, a rotation shown once.
  await click(`a[href="#/endpoints/${receivers.failingId}"]`);
  await page.locator("#pause").waitFor({ timeout: WAIT });
  await click("#pause");
  await page.locator("#resume").waitFor({ timeout: WAIT });
  assert.equal((await api(base, "GET", `/v1/endpoints/${receivers.failingId}`)).status, "paused");
  await click("#resume");
  await page.locator("#pause").waitFor({ timeout: WAIT });
  assert.equal((await api(base, "GET", `/v1/endpoints/${receivers.failingId}`)).status, "active");
  await click("#send-test");
  await page.locator("#status", { hasText: "Test sent: status 200" }).waitFor({ timeout: WAIT });
  await click("#rotate");
  const secret = page.locator("#new-secret code");
  await secret.waitFor({ timeout: WAIT });
  assert.match(await secret.innerText(), /^whsec_/);
  await shot("rotated");
  await click("#secret-done");
  await page.locator("#new-secret").waitFor({ state: "detached", timeout: WAIT });
  assert.equal(await page.locator("text=whsec_").count(), 0, "the secret is shown once");

  // The live feed: a new event's attempt appears in it as it happens. It is chosen while the
  // endpoint list, asked for just before, still waits for hookd: the list's late answer must
  // not cover the feed.
  const list = await holdAnswers(page, (u) => u.pathname === "/v1/endpoints");
  await click('nav a[href="#/"]');
  await click('a[href="#/feed"]');
  await page.locator("#feed").waitFor({ timeout: WAIT });
  const feedShown = Date.now();
  assert.ok(feedShown < (await list.answered), "the feed was shown before the list answered");
  await page.waitForTimeout(300);
  await list.stop();
  assert.ok(await page.locator("#feed").isVisible(), "the list's late answer covered the feed");
  await until("the live stream open", async () =>
    (await page.evaluate(() => document.body.dataset.stream)) === "open");
  const before = await page.locator("#feed li").count();
  await api(base, "POST", "/v1/events", { tenant: receivers.tenant, type: "fraud_detected", payload: { feed: true } });
  await until("a new line in the feed", async () => (await page.locator("#feed li").count()) > before);
  await shot("feed");

  // Logging out forgets the token.
  await click("#logout");
  await page.locator("#login-form").waitFor({ timeout: WAIT });
  assert.equal(await page.evaluate(() => sessionStorage.getItem("hookd-token")), null);

  await context.close();
  assert.deepEqual(watched.problems, [], watched.problems.join("\n"));
}

async function main() {
  fs.mkdirSync(SHOTS, { recursive: true });
  const hookd = await startHookd();
  const ok = await receiver(200);
  const failing = await receiver(500);
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ["--no-sandbox", "--disable-gpu"],
  });
  try {
    for (const run of [
      { name: "desktop 1280×800", viewport: { width: 1280, height: 800 }, keyboard: false, shots: true },
      { name: "phone 390×844, keyboard only", viewport: { width: 390, height: 844 }, keyboard: true, shots: ["endpoint"] },
    ]) {
      // Each run: two endpoints, one of them failing with deliveries that failed for good.
      const tenant = run.keyboard ? "kbd" : "desk";
      failing.status = 500;
      await api(hookd.base, "POST", "/v1/endpoints", { tenant, url: ok.url, event_types: ["*"] });
      const bad = await api(hookd.base, "POST", "/v1/endpoints", { tenant, url: failing.url, event_types: ["*"] });
      for (let i = 0; i < 3; i++) {
        await api(hookd.base, "POST", "/v1/events", { tenant, type: "fraud_detected", payload: { i } });
      }
      await until("a failing endpoint", async () => {
        const e = await api(hookd.base, "GET", `/v1/endpoints/${bad.id}`);
        const failed = await api(hookd.base, "GET", `/v1/endpoints/${bad.id}/deliveries?status=failed`);
        return e.stats.state === "failing" && failed.deliveries.length > 0;
      });
      // Only this run's endpoints are shown: the others are deleted.
      for (const e of (await api(hookd.base, "GET", "/v1/endpoints")).endpoints) {
        if (e.tenant !== tenant) await api(hookd.base, "DELETE", `/v1/endpoints/${e.id}`);
      }
      await flow(browser, hookd, { failing, failingId: bad.id, tenant }, run);
      console.log(`ok - console flow, ${run.name}`);
    }
  } finally {
    await browser.close();
    hookd.child.kill("SIGKILL");
    ok.close();
    failing.close();
    fs.rmSync(hookd.dir, { recursive: true, force: true });
  }
}

main().then(
  () => { console.log("console test: passed"); process.exit(0); },
  (e) => { console.error(`console test: FAILED\n${e.stack || e}`); process.exit(1); },
);
