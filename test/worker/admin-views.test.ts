import { describe, expect, it } from "vitest";
import { SELF } from "cloudflare:test";
import { subscribe } from "../helpers/bytes";
import { ADMIN_TOKEN, admin, expectError, json, newAccount, provision, type Json } from "./admin-client";
import { connectDevice, eventually, within, type RawConnection } from "./mqtt";

const devTopic = (account: string, deviceId: string, channel: string): string => `xi/blue/v1/${account}/d/${deviceId}/${channel}`;

/** Publishes over the HTTP API as a fresh JWT subject (the worker tests allow 3 HTTP publishes per identity). */
async function publishHttp(account: string, topic: string, payload: string, opts: { qos?: 0 | 1; retain?: boolean } = {}): Promise<void> {
  const minted = await json(await admin("POST", `/accounts/${account}/tokens`, { subject: `pub-${crypto.randomUUID()}` }));
  const query = new URLSearchParams({ topic, qos: String(opts.qos ?? 0), retain: String(opts.retain ?? false) });
  const res = await SELF.fetch(`https://broker/api/v1/messages?${query}`, {
    method: "POST",
    headers: { Authorization: `Bearer ${String(minted.token)}` },
    body: payload,
  });
  expect(res.status).toBe((opts.qos ?? 0) > 0 ? 201 : 202);
}

/** Subscribes and waits for the SUBACK. */
async function subscribeTo(conn: RawConnection, filter: string, qos: 0 | 1): Promise<void> {
  conn.ws.send(subscribe(1, [[filter, qos]]));
  const suback = await conn.next("suback");
  expect(suback.cmd === "suback" ? suback.granted : null).toEqual([qos]);
}

const list = (body: Json, key: string): Json[] => body[key] as Json[];

describe("GET .../clients", () => {
  it("lists the account's live connections with identity, protocol, address and connect time, page by page", async () => {
    const account = newAccount();
    const a = await provision(account, `a-${account}`);
    const b = await provision(account, `b-${account}`);
    const before = Date.now();
    const connA = await connectDevice(a.deviceId, a.password);
    const connB = await connectDevice(b.deviceId, b.password, { clean: false });
    expect([connA.returnCode, connB.returnCode]).toEqual([0, 0]);

    const all = await json(await admin("GET", `/accounts/${account}/clients`));
    expect(all).toMatchObject({ accountId: account, next: null });
    const clients = list(all, "clients");
    expect(clients.map((c) => c.clientId)).toEqual([a.deviceId, b.deviceId]);
    expect(clients[0]).toMatchObject({
      clientId: a.deviceId,
      identity: { kind: "device", id: a.deviceId },
      protocol: "mqtt4-ws",
      keepAliveSeconds: 60,
      cleanStart: true,
      persistent: false,
      subscriptions: 0,
    });
    expect(clients[1]).toMatchObject({ cleanStart: false, persistent: true });
    expect(typeof clients[0]?.address).toBe("string");
    const since = Date.parse(String(clients[0]?.connectedAt));
    expect(since).toBeGreaterThanOrEqual(before - 1000);
    expect(new Date(since).toISOString()).toBe(clients[0]?.connectedAt);

    const first = await json(await admin("GET", `/accounts/${account}/clients?limit=1`));
    expect(list(first, "clients").map((c) => c.clientId)).toEqual([a.deviceId]);
    expect(first.next).toBe(a.deviceId);
    const second = await json(await admin("GET", `/accounts/${account}/clients?limit=1&cursor=${encodeURIComponent(a.deviceId)}`));
    expect(list(second, "clients").map((c) => c.clientId)).toEqual([b.deviceId]);
    expect(second.next).toBeNull();

    // Another account sees none of them; a closed connection leaves the list.
    expect(list(await json(await admin("GET", `/accounts/${newAccount()}/clients`)), "clients")).toEqual([]);
    connA.ws.close();
    await eventually(
      async () => list(await json(await admin("GET", `/accounts/${account}/clients`)), "clients").map((c) => c.clientId),
      (ids) => ids.length === 1,
      "the closed connection is still listed",
    );
    connB.ws.close();
  });

  it("refuses bad pages, bad account ids and missing tokens with JSON errors", async () => {
    const account = newAccount();
    for (const view of ["clients", "sessions", "retained"]) {
      for (const bad of ["0", "x", "-2"]) await expectError(await admin("GET", `/accounts/${account}/${view}?limit=${bad}`), 400, "invalid_limit");
      await expectError(await admin("GET", `/accounts/bad$acc/${view}`), 400, "invalid_account_id");
      await expectError(await admin("GET", `/accounts/${account}/${view}`, undefined, null), 401, "unauthorized");
    }
    await expectError(await admin("GET", `/accounts/${account}/stats`, undefined, "wrong"), 401, "unauthorized");
    await expectError(await admin("GET", "/accounts/bad$acc/stats"), 400, "invalid_account_id");
  });
});

describe("GET .../sessions", () => {
  it("lists persistent sessions with their queue depth, online or not; clean ones are not sessions", async () => {
    const account = newAccount();
    const keeper = await provision(account, `keeper-${account}`);
    const clean = await provision(account, `clean-${account}`);
    const conn = await connectDevice(keeper.deviceId, keeper.password, { clean: false });
    await subscribeTo(conn, devTopic(account, keeper.deviceId, "cmd"), 1);
    const other = await connectDevice(clean.deviceId, clean.password);

    const online = await json(await admin("GET", `/accounts/${account}/sessions`));
    expect(list(online, "sessions")).toEqual([{ clientId: keeper.deviceId, online: true, subscriptions: 1, queued: 0, dropped: 0 }]);

    conn.ws.close();
    await eventually(
      async () => list(await json(await admin("GET", `/accounts/${account}/sessions`)), "sessions")[0]?.online,
      (v) => v === false,
      "the session still shows online",
    );
    await publishHttp(account, devTopic(account, keeper.deviceId, "cmd"), "one", { qos: 1 });
    await publishHttp(account, devTopic(account, keeper.deviceId, "cmd"), "two", { qos: 1 });
    const offline = await json(await admin("GET", `/accounts/${account}/sessions`));
    expect(offline).toMatchObject({ accountId: account, next: null });
    expect(list(offline, "sessions")).toEqual([{ clientId: keeper.deviceId, online: false, subscriptions: 1, queued: 2, dropped: 0 }]);
    other.ws.close();
  });
});

describe("GET and DELETE .../retained", () => {
  it("pages through the retained messages a filter matches, in topic order, and deletes one", async () => {
    const account = newAccount();
    const base = `xi/blue/v1/${account}/d/x`;
    for (const ch of ["c", "a", "b"]) await publishHttp(account, `${base}/${ch}`, `payload-${ch}`, { retain: true });
    await publishHttp(account, `xi/blue/v1/${account}/d/y/z`, "elsewhere", { retain: true });

    const first = await json(await admin("GET", `/accounts/${account}/retained?filter=${encodeURIComponent(`${base}/+`)}&limit=2`));
    expect(first).toMatchObject({ accountId: account, filter: `${base}/+`, next: `${base}/b` });
    expect(list(first, "retained")).toEqual([
      { topic: `${base}/a`, qos: 0, bytes: 9, payloadBase64: btoa("payload-a") },
      { topic: `${base}/b`, qos: 0, bytes: 9, payloadBase64: btoa("payload-b") },
    ]);
    const second = await json(await admin("GET", `/accounts/${account}/retained?filter=${encodeURIComponent(`${base}/+`)}&limit=2&cursor=${encodeURIComponent(String(first.next))}`));
    expect(list(second, "retained").map((r) => r.topic)).toEqual([`${base}/c`]);
    expect(second.next).toBeNull();

    // The default filter is `#`: every topic but the $SYS ones.
    const all = await json(await admin("GET", `/accounts/${account}/retained`));
    expect(list(all, "retained").map((r) => r.topic)).toEqual([`${base}/a`, `${base}/b`, `${base}/c`, `xi/blue/v1/${account}/d/y/z`]);

    const del = await admin("DELETE", `/accounts/${account}/retained?topic=${encodeURIComponent(`${base}/b`)}`);
    expect(del.status).toBe(204);
    await expectError(await admin("DELETE", `/accounts/${account}/retained?topic=${encodeURIComponent(`${base}/b`)}`), 404, "retained_not_found");
    const after = await json(await admin("GET", `/accounts/${account}/retained?filter=${encodeURIComponent(`${base}/#`)}`));
    expect(list(after, "retained").map((r) => r.topic)).toEqual([`${base}/a`, `${base}/c`]);
  });

  it("refuses invalid filters and topics", async () => {
    const account = newAccount();
    for (const bad of ["a/#/b", "a+", "", "$share/g/a"]) {
      await expectError(await admin("GET", `/accounts/${account}/retained?filter=${encodeURIComponent(bad)}`), 400, "invalid_filter");
    }
    for (const bad of ["?", "?topic=", "?topic=a%2F%23", "?topic=a%2B"]) {
      await expectError(await admin("DELETE", `/accounts/${account}/retained${bad}`), 400, "invalid_topic");
    }
    await expectError(await admin("DELETE", `/accounts/${account}/retained?topic=a`, undefined, null), 401, "unauthorized");
  });
});

describe("POST .../devices/<id>/password", () => {
  it("answers a new password once; the old one stops working and the live connection is closed", async () => {
    const account = newAccount();
    const { deviceId, password } = await provision(account);
    const conn = await connectDevice(deviceId, password);
    const res = await admin("POST", `/accounts/${account}/devices/${deviceId}/password`);
    expect(res.status).toBe(200);
    const body = await json(res);
    expect(Object.keys(body).sort()).toEqual(["accountId", "deviceId", "disconnected", "password"]);
    expect(body).toMatchObject({ accountId: account, deviceId, disconnected: true });
    expect(body.password).toMatch(/^[A-Za-z0-9_-]{32}$/);
    expect(body.password).not.toBe(password);
    await within(conn.closed, 5_000, "the connection with the old password stayed open");
    expect((await connectDevice(deviceId, password)).returnCode).toBe(4);
    const fresh = await connectDevice(deviceId, String(body.password));
    expect(fresh.returnCode).toBe(0);
    fresh.ws.close();
  });

  it("with ?disconnect=false keeps the live connection; the next CONNECT needs the new password", async () => {
    const account = newAccount();
    const { deviceId, password } = await provision(account);
    const conn = await connectDevice(deviceId, password);
    const body = await json(await admin("POST", `/accounts/${account}/devices/${deviceId}/password?disconnect=false`));
    expect(body.disconnected).toBe(false);
    const clients = list(await json(await admin("GET", `/accounts/${account}/clients`)), "clients");
    expect(clients.map((c) => c.clientId)).toEqual([deviceId]);
    expect((await connectDevice(`${deviceId}`, password)).returnCode).toBe(4);
    conn.ws.close();
  });

  it("refuses unknown devices, other accounts' devices and bad queries", async () => {
    const account = newAccount();
    const { deviceId } = await provision(account);
    await expectError(await admin("POST", `/accounts/${account}/devices/missing/password`), 404, "device_not_found");
    await expectError(await admin("POST", `/accounts/${newAccount()}/devices/${deviceId}/password`), 404, "device_not_found");
    await expectError(await admin("POST", `/accounts/${account}/devices/${deviceId}/password?disconnect=maybe`), 400, "invalid_query");
    await expectError(await admin("POST", `/accounts/${account}/devices/${deviceId}/password`, undefined, null), 401, "unauthorized");
  });
});

describe("GET .../stats", () => {
  it("counts messages, deliveries, retained messages, subscriptions, sessions and drops", async () => {
    const account = newAccount();
    const empty = await json(await admin("GET", `/accounts/${account}/stats`));
    expect(empty).toMatchObject({
      accountId: account,
      messages: { in: 0, out: 0, unmatched: 0 },
      deliveries: { online: 0, queued: 0, retainedOnSubscribe: 0 },
      retained: { count: 0, bytes: 0, monitorEvents: 0 },
      subscriptions: 0,
      sessions: { online: 0, offline: 0 },
      drops: { qos0Offline: 0, cleanSessionGone: 0, enqueueFailed: 0, queueFull: 0, sharedNoMember: 0, sharedQueueFull: 0 },
    });
    expect(new Date(String(empty.since)).toISOString()).toBe(empty.since);

    const sub = await provision(account, `sub-${account}`);
    const subTopic = devTopic(account, sub.deviceId, "in");
    await publishHttp(account, subTopic, "kept", { retain: true });
    const conn = await connectDevice(sub.deviceId, sub.password, { clean: false });
    await subscribeTo(conn, subTopic, 1);
    await conn.next("publish", "no retained message on subscribe");
    await publishHttp(account, subTopic, "live", { qos: 1 });
    await conn.next("publish", "no live delivery");
    const online = await json(await admin("GET", `/accounts/${account}/stats`));
    expect(online).toMatchObject({
      deliveries: { online: 1, queued: 0, retainedOnSubscribe: 1 },
      subscriptions: 1,
      sessions: { online: 1, offline: 0 },
      connections: { connects: 1, disconnects: 0 },
    });
    // Retained: the quota's use (the message), and the monitoring Connect event apart.
    const sys = list(await json(await admin("GET", `/accounts/${account}/retained?filter=${encodeURIComponent("$SYS/mon/+")}`)), "retained");
    expect(sys.map((r) => r.topic)).toEqual([`$SYS/mon/${sub.deviceId}`]);
    expect(online.retained).toEqual({ count: 1, bytes: 4 + subTopic.length, monitorEvents: 1 });
    const messages = online.messages as Json;
    // The two publishes, plus the monitoring Connect event; out: the retained and the live copy.
    expect(messages).toEqual({ in: 3, out: 2, unmatched: 2 });

    conn.ws.close();
    await eventually(async () => (await json(await admin("GET", `/accounts/${account}/stats`))).sessions, (s) => (s as Json).offline === 1, "no offline session");
    await publishHttp(account, subTopic, "queued", { qos: 1 });
    await publishHttp(account, subTopic, "lost", { qos: 0 });
    const offline = await json(await admin("GET", `/accounts/${account}/stats`));
    expect(offline).toMatchObject({
      deliveries: { online: 1, queued: 1 },
      sessions: { online: 0, offline: 1 },
      connections: { connects: 1, disconnects: 1 },
      drops: { qos0Offline: 1 },
    });
  });
});

describe("GET /admin/v1/metrics", () => {
  it("answers Prometheus text for the accounts the registry knows, behind the admin token", async () => {
    const account = newAccount();
    await provision(account);
    await publishHttp(account, `xi/blue/v1/${account}/d/x/t`, "m", { retain: true });
    const res = await SELF.fetch("https://broker/admin/v1/metrics", { headers: { Authorization: `Bearer ${ADMIN_TOKEN}` } });
    expect(res.status).toBe(200);
    expect(res.headers.get("Content-Type")).toMatch(/^text\/plain; version=0\.0\.4/);
    const text = await res.text();
    expect(text).toContain("# TYPE mqtt_messages_in_total counter");
    expect(text).toContain(`mqtt_messages_in_total{account="${account}"} 1`);
    expect(text).toContain(`mqtt_retained_messages{account="${account}"} 1`);
    expect(text).toContain(`mqtt_drops_total{account="${account}",reason="qos0Offline"} 0`);
    // The anonymous account of the worker tests (ANONYMOUS_ACCOUNT=dev) is reported too.
    expect(text).toContain('mqtt_sessions{account="dev",state="online"}');
    expect(text).toContain("mqtt_metrics_accounts_truncated 0");
    for (const line of text.trimEnd().split("\n")) expect(line).toMatch(/^(# (HELP|TYPE) \w+ .+|\w+(\{[^}]*\})? \d+)$/);

    const refused = await SELF.fetch("https://broker/admin/v1/metrics");
    expect(refused.status).toBe(401);
    await expectError(refused, 401, "unauthorized");
  });
});
