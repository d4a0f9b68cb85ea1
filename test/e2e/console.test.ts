import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { chromium, type BrowserContext, type Page } from "playwright-core";
import { randomBytes } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { connectCollecting, end, pingRoundTrip, subscribe, uid, waitFor, type Received } from "../helpers/mqtt";
import { mintToken } from "../helpers/admin";
import { chromiumHere, chromiumMissing } from "../helpers/chromium";

/** playwright-core's own Chromium revision, where its cache would hold it. */
function playwrightChromium(): string | undefined {
  try {
    return chromium.executablePath();
  } catch {
    return undefined; // a platform Playwright ships no Chromium for
  }
}
const FLAGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--no-first-run",
];
const ARTIFACTS = resolve(import.meta.dirname, "../artifacts");

const brokerUrl = (): string => inject("brokerUrl");

describe("static assets and Worker routes side by side", () => {
  it("serves the console and MQTT.js as assets; /mqtt, /health, /api and unknown paths still reach the Worker", async () => {
    const page = await fetch(`${brokerUrl()}/`);
    expect(page.status).toBe(200);
    expect(page.headers.get("content-type")).toMatch(/text\/html/);
    expect(page.headers.get("content-security-policy")).toMatch(/script-src 'self'/);
    expect(await page.text()).toContain("/vendor/mqtt.min.js");

    const lib = await fetch(`${brokerUrl()}/vendor/mqtt.min.js`);
    expect(lib.status).toBe(200);
    expect(lib.headers.get("content-type")).toMatch(/javascript/);
    expect((await lib.text()).length).toBeGreaterThan(100_000);

    const upgrade = await fetch(`${brokerUrl()}/mqtt`);
    expect(upgrade.status).toBe(426);
    expect(await upgrade.json()).toMatchObject({ error: { code: "upgrade_required" } });
    expect(await (await fetch(`${brokerUrl()}/health`)).json()).toMatchObject({ ok: true, checks: { d1: { ok: true }, durableObject: { ok: true } } });
    const api = await fetch(`${brokerUrl()}/api/v1/messages?topic=a`, { method: "POST", body: "x" });
    expect(api.status).toBe(401);
    const missing = await fetch(`${brokerUrl()}/no-such-page`);
    expect(missing.status).toBe(404);
    expect(await missing.json()).toMatchObject({ error: { code: "not_found" } });
  });
});

describe("the web console in Chromium", () => {
  let context: BrowserContext;
  let profile: string;
  /** Page errors and console errors (a CSP violation shows up here). */
  const errors: string[] = [];

  async function openConsole(fragment: string): Promise<Page> {
    const page = await context.newPage();
    page.on("pageerror", (e) => errors.push(`pageerror: ${e.message}`));
    page.on("console", (m) => {
      if (m.type() === "error") errors.push(`console: ${m.text()}`);
    });
    await page.goto(`${brokerUrl()}/#${fragment}`);
    return page;
  }

  const connected = (page: Page) => page.waitForSelector('#status[data-state="connected"]', { timeout: 15_000 });

  beforeAll(async () => {
    // CHROMIUM_PATH, the Playwright cache, or a system Chromium; none is a failure, not a skip.
    const found = chromiumHere(playwrightChromium());
    if (!("path" in found)) throw new Error(chromiumMissing(found.tried));
    mkdirSync(ARTIFACTS, { recursive: true });
    profile = mkdtempSync(join(tmpdir(), "mqtt-console-chromium-"));
    context = await chromium.launchPersistentContext(profile, {
      executablePath: found.path,
      headless: true,
      args: FLAGS,
      viewport: { width: 1280, height: 900 },
    });
  });

  afterAll(async () => {
    await context?.close();
    if (profile) rmSync(profile, { recursive: true, force: true });
  });

  it("renders the HTTP API reference from /openapi.json, every operation with its answers", async () => {
    const doc: unknown = await (await fetch(`${brokerUrl()}/openapi.json`)).json();
    const paths = typeof doc === "object" && doc !== null && "paths" in doc && typeof doc.paths === "object" && doc.paths !== null ? doc.paths : {};
    const operations = Object.values(paths).reduce((n: number, item: unknown) => n + (typeof item === "object" && item !== null ? Object.keys(item).length : 0), 0);
    const page = await context.newPage();
    page.on("pageerror", (e) => errors.push(`pageerror: ${e.message}`));
    await page.goto(`${brokerUrl()}/api.html`);
    await page.waitForSelector("body[data-ready]", { timeout: 15_000 });
    expect(await page.getAttribute("body", "data-ready")).toBe(String(operations));
    expect(await page.locator("section.op").count()).toBe(operations);
    await page.locator("section.op", { hasText: "/admin/v1/accounts/{accountId}/retained" }).first().waitFor();
    expect(await page.textContent("body")).toContain("retained_not_found");
    await page.screenshot({ path: join(ARTIFACTS, "api-reference.png"), fullPage: false });
    await page.close();
    expect(errors).toEqual([]);
  });

  it("connects with a minted token, subscribes, receives, publishes, and shows $SYS/mon events", async () => {
    const account = uid("web");
    const user = uid("user");
    const pageToken = await mintToken(account, user, { acl: { pub: ["#"], sub: ["#", "$SYS/#"] } });
    const clientId = uid("console");
    const page = await openConsole(`token=${encodeURIComponent(pageToken)}&user=${user}&clientId=${clientId}`);
    await connected(page);
    // The token came in the fragment and is gone from the address bar.
    expect(page.url()).not.toContain("token");
    await page.waitForSelector("#events-status >> text=Subscribed to $SYS/mon/#");

    // Subscribe from the page.
    await page.fill("#sub-filter", "demo/#");
    await page.selectOption("#sub-qos", "1");
    await page.click("#subscribe");
    await page.waitForSelector('#subscriptions li[data-filter="demo/#"] >> text=QoS 1');

    // A message from MQTT.js outside the browser shows up live.
    const nodeUser = uid("node");
    const nodeToken = await mintToken(account, nodeUser, { acl: { pub: ["#"], sub: ["#"] } });
    const node = await connectCollecting({ clientId: nodeUser, username: nodeUser, password: nodeToken });
    await node.client.publishAsync("demo/in", "hello from MQTT.js", { qos: 1 });
    const inbound = page.locator('#messages li[data-topic="demo/in"]');
    await inbound.waitFor({ timeout: 10_000 });
    expect(await inbound.getAttribute("data-qos")).toBe("1");
    expect(await inbound.getAttribute("data-retain")).toBe("false");
    expect(await inbound.textContent()).toMatch(/\d\d:\d\d:\d\d\.\d{3}.*demo\/in.*QoS 1.*hello from MQTT\.js/s);

    // Publish from the page (QoS 1, retained); MQTT.js receives it.
    await subscribe(node.client, "demo/out", 1);
    await page.fill("#pub-topic", "demo/out");
    await page.fill("#pub-payload", "hello from the browser");
    await page.selectOption("#pub-qos", "1");
    await page.check("#pub-retain");
    await page.click("#publish");
    await waitFor(() => node.got.some((m) => m.topic === "demo/out"), "the page's publish at MQTT.js");
    const out = node.got.find((m) => m.topic === "demo/out");
    expect(out).toMatchObject({ payload: "hello from the browser", qos: 1 });
    await page.waitForSelector("#pub-result >> text=acknowledged (PUBACK)");

    // Subscribing to the topic itself brings the retained copy, flagged.
    await page.fill("#sub-filter", "demo/out");
    await page.click("#subscribe");
    const retained = page.locator('#messages li[data-topic="demo/out"][data-retain="true"]');
    await retained.waitFor({ timeout: 10_000 });
    expect(await retained.locator(".badge.retain").count()).toBe(1);

    // Connection events. A privileged client watches $SYS/mon/# too: when the broker
    // publishes Connect events, the page must show the outside client's; otherwise (or as
    // well) a message a privileged client publishes on $SYS/mon/test must show.
    const monUser = uid("mon");
    const monToken = await mintToken(account, monUser, { acl: { pub: ["$SYS/#"], sub: ["$SYS/#"] } });
    const mon = await connectCollecting({ clientId: monUser, username: monUser, password: monToken });
    await subscribe(mon.client, "$SYS/mon/#", 0);
    const isConnectOf = (m: Received, id: string): boolean => m.topic === `$SYS/mon/${id}` && m.payload.includes('"Connect"');
    await mon.client.publishAsync("$SYS/mon/test", JSON.stringify({ note: "published by the console test" }), { qos: 0 });
    await waitFor(
      () => mon.got.some((m) => isConnectOf(m, nodeUser) || m.topic === "$SYS/mon/test"),
      "a $SYS/mon message at the privileged client",
    );
    await pingRoundTrip(mon.client); // the retained events follow the SUBACK; its own message was routed
    if (mon.got.some((m) => isConnectOf(m, nodeUser))) {
      await page.waitForSelector(`#events li[data-action="Connect"][data-topic="$SYS/mon/${nodeUser}"]`, { timeout: 10_000 });
      console.info("console test: the page showed the broker's Connect event");
    } else {
      await page.waitForSelector('#events li[data-topic="$SYS/mon/test"]', { timeout: 10_000 });
      console.info("console test: no Connect events from the broker yet; the page showed $SYS/mon/test");
    }

    await page.screenshot({ path: join(ARTIFACTS, "console-desktop.png"), fullPage: true });
    await page.setViewportSize({ width: 390, height: 844 });
    // A string runs in the page; the test's tsconfig has no DOM types.
    const overflow = await page.evaluate<number>("document.documentElement.scrollWidth - window.innerWidth");
    expect(overflow, "horizontal overflow at phone width (px)").toBeLessThanOrEqual(0);
    await page.screenshot({ path: join(ARTIFACTS, "console-phone.png"), fullPage: true });

    await node.client.publishAsync("demo/out", "", { qos: 1, retain: true });
    await end(node.client, mon.client);
    await page.close();
    expect(errors).toEqual([]);
  });

  it("speaks MQTT 5 with QoS 2, lists clients online, charts messages per second and browses retained messages", async () => {
    const account = uid("web5");
    const user = uid("user");
    const pageToken = await mintToken(account, user, { acl: { pub: ["#"], sub: ["#", "$SYS/#"] } });
    const clientId = uid("console5");
    const page = await openConsole(`token=${encodeURIComponent(pageToken)}&user=${user}&clientId=${clientId}&v=5`);
    await connected(page);
    expect(await page.inputValue("#mqtt-version")).toBe("5");
    await page.waitForSelector("#events-status >> text=Subscribed to $SYS/mon/#");
    // The page's own connection is online, from its retained Connect event.
    await page.waitForSelector(`#clients li[data-client-id="${clientId}"] >> text=mqtt5-ws`, { timeout: 10_000 });

    // Another client comes and goes: listed while connected, gone after.
    const nodeUser = uid("node");
    const nodeToken = await mintToken(account, nodeUser, { acl: { pub: ["#"], sub: ["#"] } });
    const node = await connectCollecting({ clientId: nodeUser, username: nodeUser, password: nodeToken });
    await page.waitForSelector(`#clients li[data-client-id="${nodeUser}"]`, { timeout: 10_000 });
    expect(await page.textContent("#clients-count")).toBe("2");

    // Retained messages: browsed by filter, then one cleared from the page.
    await node.client.publishAsync("shelf/a", "first", { qos: 1, retain: true });
    await node.client.publishAsync("shelf/b", "second", { qos: 1, retain: true });
    await node.client.publishAsync("other/c", "elsewhere", { qos: 1, retain: true });
    await page.fill("#retained-filter", "shelf/#");
    await page.click("#browse");
    await page.waitForSelector('#retained-status[data-done="true"]', { timeout: 10_000 });
    expect(await page.textContent("#retained-status")).toBe("2 retained message(s) match shelf/#.");
    expect(await page.locator("#retained li").evaluateAll((items) => items.map((li) => li.getAttribute("data-topic")))).toEqual(["shelf/a", "shelf/b"]);
    await page.click('#retained li[data-topic="shelf/a"] button');
    await page.locator('#retained li[data-topic="shelf/a"]').waitFor({ state: "detached", timeout: 10_000 });
    await page.evaluate("document.getElementById('retained-status').removeAttribute('data-done')");
    await page.click("#browse");
    await page.waitForSelector('#retained-status[data-done="true"]', { timeout: 10_000 });
    expect(await page.textContent("#retained-status")).toBe("1 retained message(s) match shelf/#.");
    // The browse left no subscription behind: nothing on shelf/# reaches the message panel.
    expect(await page.locator("#subscriptions li").count()).toBe(0);

    // QoS 2 both ways, and every message received counts in the chart.
    await page.fill("#sub-filter", "live/#");
    await page.selectOption("#sub-qos", "2");
    await page.click("#subscribe");
    await page.waitForSelector('#subscriptions li[data-filter="live/#"] >> text=QoS 2');
    const before = Number(await page.getAttribute("#rate-chart", "data-total"));
    for (const n of [1, 2, 3]) await node.client.publishAsync(`live/${n}`, `m${n}`, { qos: 2 });
    await page.waitForSelector('#messages li[data-topic="live/3"][data-qos="2"]', { timeout: 10_000 });
    expect(Number(await page.getAttribute("#rate-chart", "data-total")) - before).toBe(3);
    expect(await page.locator("#rate-chart rect").count()).toBe(60);
    await subscribe(node.client, "back/#", 2);
    await page.fill("#pub-topic", "back/1");
    await page.fill("#pub-payload", "exactly once");
    await page.selectOption("#pub-qos", "2");
    await page.click("#publish");
    await page.waitForSelector("#pub-result >> text=completed (PUBCOMP)");
    await waitFor(() => node.got.some((m) => m.topic === "back/1" && m.qos === 2), "the page's QoS 2 publish at MQTT.js");

    await end(node.client);
    await page.locator(`#clients li[data-client-id="${nodeUser}"]`).waitFor({ state: "detached", timeout: 10_000 });
    await page.screenshot({ path: join(ARTIFACTS, "console-mqtt5.png"), fullPage: true });
    for (const topic of ["shelf/b", "other/c"]) {
      await page.fill("#pub-topic", topic);
      await page.fill("#pub-payload", "");
      await page.check("#pub-retain");
      await page.click("#publish");
      await page.waitForSelector(`#pub-result >> text=${topic} (retained)`);
    }
    await page.close();
    expect(errors).toEqual([]);
  });

  it("connects with the browser cookie + CSRF flow, and shows a refusal", async () => {
    const account = uid("web");
    const user = uid("user");
    const token = await mintToken(account, user);
    const csrf = randomBytes(16).toString("hex");
    const url = brokerUrl();
    await context.addCookies([
      { name: "mqtt_token", value: token, url, httpOnly: true, sameSite: "Strict" },
      { name: "mqtt_csrf", value: csrf, url, sameSite: "Strict" },
    ]);
    try {
      const page = await openConsole(`user=${user}&auth=cookie`);
      await connected(page);
      // The default token has no $SYS/# grant: the panel says so instead of staying silent.
      await page.waitForSelector("#events-status >> text=Not authorized for $SYS/mon/#");
      await page.click("#disconnect");
      await page.waitForSelector('#status[data-state="disconnected"]');

      // A token cookie signed by someone else: CONNACK 4, shown, and no retry loop.
      const forged = `${token.slice(0, token.lastIndexOf(".") + 1)}${randomBytes(32).toString("base64url")}`;
      await context.addCookies([{ name: "mqtt_token", value: forged, url, httpOnly: true, sameSite: "Strict" }]);
      await page.click("#connect");
      await page.waitForSelector('#status[data-state="error"]', { timeout: 15_000 });
      expect(await page.textContent("#conn-error")).toContain("CONNACK 4");
      await page.close();
    } finally {
      await context.clearCookies();
    }
    // The refused connection logs a WebSocket close in the console; nothing else may.
    expect(errors.filter((e) => !/WebSocket/i.test(e))).toEqual([]);
  });
});
