/**
 * The admin views against the running broker, with real MQTT.js clients. This file runs in the
 * e2e project (one router per account) and in e2e-shards (4 router shards keyed on topic level
 * 1), where the retained pages are merged across shards and the stats summed.
 */
import { describe, expect, inject, it } from "vitest";
import { admin, mintToken } from "../helpers/admin";
import { connectCollecting, end, subscribe, uid } from "../helpers/mqtt";

type Json = Record<string, unknown>;
const isJson = (v: unknown): v is Json => typeof v === "object" && v !== null && !Array.isArray(v);

async function get(path: string): Promise<Json> {
  const { status, json } = await admin("GET", path);
  expect(status).toBe(200);
  if (!isJson(json)) throw new Error(`not a JSON object: ${JSON.stringify(json)}`);
  return json;
}

const rows = (body: Json, key: string): Json[] => (Array.isArray(body[key]) ? body[key].filter(isJson) : []);

describe("admin views of a running broker", () => {
  it("pages through retained messages spread over topic levels in order, once each; deletes one; counts them", async () => {
    const account = uid("views");
    const user = uid("pub");
    const token = await mintToken(account, user, { acl: { pub: ["#"], sub: ["#"] } });
    const pub = await connectCollecting({ clientId: user, username: user, password: token });
    // Level 1 varies, so with ROUTER_SHARD_LEVEL=1 the topics land on different shards.
    const topics = Array.from({ length: 9 }, (_, i) => `shelf${i}/item`).sort();
    for (const topic of topics) await pub.client.publishAsync(topic, `v-${topic}`, { qos: 1, retain: true });

    const seen: string[] = [];
    let cursor: string | null = null;
    for (let pages = 0; pages < 20; pages++) {
      const query: string = `?filter=${encodeURIComponent("+/item")}&limit=2${cursor === null ? "" : `&cursor=${encodeURIComponent(cursor)}`}`;
      const page = await get(`/accounts/${account}/retained${query}`);
      for (const r of rows(page, "retained")) {
        seen.push(String(r.topic));
        expect(r.payloadBase64).toBe(Buffer.from(`v-${String(r.topic)}`).toString("base64"));
      }
      cursor = typeof page.next === "string" ? page.next : null;
      if (cursor === null) break;
    }
    expect(seen).toEqual(topics);

    const stats = await get(`/accounts/${account}/stats`);
    expect(stats.retained).toMatchObject({ count: 9 });
    expect(stats.messages).toMatchObject({ in: expect.any(Number) });
    expect(Number((stats.messages as Json).in)).toBeGreaterThanOrEqual(9);

    const first = topics[0] ?? "";
    expect((await admin("DELETE", `/accounts/${account}/retained?topic=${encodeURIComponent(first)}`)).status).toBe(204);
    expect((await admin("DELETE", `/accounts/${account}/retained?topic=${encodeURIComponent(first)}`)).status).toBe(404);
    const after = await get(`/accounts/${account}/retained?filter=${encodeURIComponent("+/item")}&limit=100`);
    expect(rows(after, "retained").map((r) => r.topic)).toEqual(topics.slice(1));
    expect((await get(`/accounts/${account}/stats`)).retained).toMatchObject({ count: 8 });

    for (const topic of topics.slice(1)) await pub.client.publishAsync(topic, "", { qos: 1, retain: true });
    await end(pub.client);
  });

  it("lists a connected MQTT.js client and its persistent session, with the stats and metrics that follow it", async () => {
    const account = uid("views");
    const user = uid("sub");
    const token = await mintToken(account, user, { acl: { pub: ["#"], sub: ["#"] } });
    const sub = await connectCollecting({ clientId: user, username: user, password: token, clean: false });
    await subscribe(sub.client, "inbox/#", 1);

    const clients = rows(await get(`/accounts/${account}/clients`), "clients");
    expect(clients).toHaveLength(1);
    expect(clients[0]).toMatchObject({ clientId: user, identity: { kind: "user", id: user }, persistent: true, subscriptions: 1 });
    expect(String(clients[0]?.protocol)).toMatch(/^mqtt[345]-ws$/);
    const sessions = rows(await get(`/accounts/${account}/sessions`), "sessions");
    expect(sessions).toEqual([{ clientId: user, online: true, subscriptions: 1, queued: 0, dropped: 0 }]);
    expect(await get(`/accounts/${account}/stats`)).toMatchObject({ sessions: { online: 1, offline: 0 }, connections: { connects: 1 } });

    const res = await fetch(`${inject("brokerUrl")}/admin/v1/metrics`, { headers: { authorization: `Bearer ${inject("adminToken")}` } });
    expect(res.status).toBe(200);
    expect(await res.text()).toMatch(/^mqtt_metrics_accounts \d+$/m);
    await end(sub.client);
  });
});
