// The `scale` scenario (bench/README.md "Scale"): the router with a large account.
//
// 1. R retained messages of 1 KiB stored, then one wildcard SUBSCRIBE receiving them all:
//    messages/s and the broker's peak RSS while it delivers (and before, for the baseline).
// 2. S subscriptions over many persistent sessions (left stored when the clients go).
// 3. The router's wake with all of that stored: the runtime is killed and restarted on the
//    same state, then the time from a new client's CONNECT to its first delivery (a router
//    wake on the way), beside the same figure on an empty broker.
// 4. Fan-in with many publishers (the broker's `fanIn` of scenarios.mjs).
// 5. The busiest router object's request rate at 1, 4 and 16 shards under the same offered
//    load: device-style topics (`xi/blue/v1/bench/d/<device>/tel`) at a fixed rate each, one
//    dashboard subscribed to `xi/blue/v1/bench/d/+/tel`; counted by the broker (BENCH_COUNTERS).
import { MqttClient } from "./client.mjs";
import { startBroker } from "./servers.mjs";
import { treeStats } from "./proc.mjs";
import { fanIn } from "./scenarios.mjs";

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function rssMiB(pid) {
  return treeStats(pid).reduce((n, p) => n + p.rssBytes, 0) / 2 ** 20;
}

/** Samples the broker's RSS every 100 ms until stopped; the peak in MiB. */
function rssSampler(pid) {
  let peak = rssMiB(pid);
  const timer = setInterval(() => {
    peak = Math.max(peak, rssMiB(pid));
  }, 100);
  return () => {
    clearInterval(timer);
    return Math.max(peak, rssMiB(pid));
  };
}

/** Publishes `count` messages from `publishers` clients (QoS 1, `window` in flight each); resolves when all are acknowledged. */
async function publishAll(url, { count, publishers, window, topicOf, payload, retain, timeoutMs }) {
  const clients = await Promise.all(Array.from({ length: publishers }, (_, i) => MqttClient.connect(url, { clientId: `scale-pub-${Date.now()}-${i}` })));
  let next = 0;
  await Promise.all(
    clients.map(
      (c) =>
        new Promise((ok, fail) => {
          let inFlight = 0;
          const timer = setTimeout(() => fail(new Error(`publishAll: ${next}/${count} sent when the time ran out`)), timeoutMs);
          const pump = () => {
            while (inFlight < window && next < count) {
              c.publish(topicOf(next++), payload, 1, retain);
              inFlight++;
            }
            if (inFlight === 0 && next >= count) {
              clearTimeout(timer);
              ok();
            }
          };
          c.onPuback = () => {
            inFlight--;
            pump();
          };
          c.onLost = () => fail(new Error("publishAll: a publisher was disconnected"));
          pump();
        }),
    ),
  );
  await Promise.all(clients.map((c) => c.end()));
}

/** Subscribes to `filter` at `qos` and counts retained deliveries until `expected` arrived (QoS 1: acknowledged as they come). */
async function receiveRetained(url, filter, expected, timeoutMs, qos = 0) {
  const sub = await MqttClient.connect(url, { clientId: `scale-sub-${Date.now()}` });
  const t0 = performance.now();
  let got = 0;
  let firstMs = 0;
  await new Promise((ok) => {
    const timer = setTimeout(ok, timeoutMs);
    sub.onMessage = (_t, _p, _q, retain) => {
      if (!retain) return;
      if (got === 0) firstMs = performance.now() - t0;
      if (++got >= expected) {
        clearTimeout(timer);
        ok();
      }
    };
    sub.onLost = () => {
      clearTimeout(timer);
      ok();
    };
    void sub.subscribe(filter, qos);
  });
  const ms = performance.now() - t0;
  await sub.end();
  return { got, ms, firstMs };
}

/** S subscriptions over `clients` persistent sessions, left stored (the clients disconnect). */
async function storeSubscriptions(url, total, clients) {
  const per = Math.ceil(total / clients);
  let made = 0;
  for (let c = 0; c < clients && made < total; c += 20) {
    await Promise.all(
      Array.from({ length: Math.min(20, clients - c) }, async (_, k) => {
        const id = `scale-sess-${c + k}`;
        const client = await MqttClient.connect(url, { clientId: id, clean: false });
        for (let f = 0; f < per && made < total; f++, made++) await client.subscribe(`scale/sub/${c + k}/${f}/+`, 1);
        await client.end();
      }),
    );
  }
  return made;
}

/** Time from a new client's CONNECT to its first delivery: CONNECT, SUBSCRIBE, a publish to itself. */
async function firstDeliveryMs(url, tag) {
  const t0 = performance.now();
  const c = await MqttClient.connect(url, { clientId: `scale-wake-${tag}` });
  const got = new Promise((ok) => {
    c.onMessage = () => ok();
  });
  await c.subscribe(`scale/wake/${tag}`, 0);
  c.publish(`scale/wake/${tag}`, Buffer.from("x"), 0);
  await got;
  const ms = performance.now() - t0;
  await c.end();
  return ms;
}

/** Requests per router object from the broker's counters: `doRpc:router.publish` is shard 0, `doRpc:router@3.deliver` shard 3. */
function routerRequests(counters) {
  const per = {};
  for (const [key, n] of Object.entries(counters.detail ?? {})) {
    const m = /^doRpc:(router(?:@\d+)?)\./.exec(key);
    if (m) per[m[1]] = (per[m[1]] ?? 0) + n;
  }
  return per;
}

/** Offered load on device topics for `ms`; the busiest router object's requests/s. */
async function shardLoad(shards, p, log) {
  const broker = await startBroker({ vars: { ROUTER_SHARDS: String(shards), ROUTER_SHARD_LEVEL: "5" } });
  try {
    const dash = await MqttClient.connect(broker.wsUrl, { clientId: "scale-dashboard" });
    let delivered = 0;
    dash.onMessage = () => delivered++;
    await dash.subscribe("xi/blue/v1/bench/d/+/tel", 0);
    const devices = await Promise.all(Array.from({ length: p.devices }, (_, i) => MqttClient.connect(broker.wsUrl, { clientId: `dev-${i}` })));
    await broker.counters.reset();
    const t0 = performance.now();
    const interval = 1000 / p.ratePerDevice;
    let sent = 0;
    const timers = devices.map((d, i) =>
      setInterval(() => {
        d.publish(`xi/blue/v1/bench/d/dev-${i}/tel`, Buffer.alloc(p.payload, 0x61), 0);
        sent++;
      }, interval),
    );
    await sleep(p.ms);
    for (const t of timers) clearInterval(t);
    await sleep(500);
    const seconds = (performance.now() - t0) / 1000;
    const per = routerRequests(await broker.counters.read());
    const rates = Object.values(per).map((n) => n / seconds);
    const busiest = Math.max(0, ...rates);
    const total = rates.reduce((a, b) => a + b, 0);
    log(`scale: ${shards} shard(s): ${sent} publishes offered, ${delivered} delivered; busiest router ${busiest.toFixed(0)} requests/s of ${total.toFixed(0)}/s over ${Object.keys(per).length} router object(s)`);
    await Promise.all([...devices, dash].map((c) => c.end()));
    return { shards, offeredPerSec: sent / seconds, delivered, routerObjects: Object.keys(per).length, busiestRequestsPerSec: busiest, totalRouterRequestsPerSec: total };
  } finally {
    await broker.stop();
  }
}

export async function scale(p, log, aedes) {
  const result = { params: p };
  // 1-3 on one broker whose state survives a restart.
  const vars = { MAX_RETAINED_MESSAGES: String(p.retained * 2), MAX_RETAINED_BYTES: String(p.retained * 4096), MAX_SUBSCRIPTIONS: String(Math.max(100, p.subscriptionsPerClient)) };
  let broker = await startBroker({ vars });
  try {
    result.emptyFirstDeliveryMs = await firstDeliveryMs(broker.wsUrl, "empty");
    const payload = Buffer.alloc(1024, 0x62);
    let t0 = performance.now();
    await publishAll(broker.wsUrl, { count: p.retained, publishers: 4, window: 200, topicOf: (i) => `scale/ret/${Math.floor(i / 1000)}/${i}`, payload, retain: true, timeoutMs: p.timeoutMs });
    result.storeRetainedPerSec = (p.retained / (performance.now() - t0)) * 1000;
    log(`scale: ${p.retained} retained messages of 1 KiB stored at ${result.storeRetainedPerSec.toFixed(0)}/s`);
    t0 = performance.now();
    result.subscriptions = await storeSubscriptions(broker.wsUrl, p.subscriptions, Math.ceil(p.subscriptions / p.subscriptionsPerClient));
    log(`scale: ${result.subscriptions} subscriptions stored over ${Math.ceil(p.subscriptions / p.subscriptionsPerClient)} persistent sessions in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    await sleep(1000);
    result.rssBeforeMiB = rssMiB(broker.pid);
    const peak = rssSampler(broker.pid);
    const got = await receiveRetained(broker.wsUrl, "scale/ret/#", p.retained, p.timeoutMs);
    result.rssPeakMiB = peak();
    result.retainedDelivered = got.got;
    result.retainedPerSec = (got.got / got.ms) * 1000;
    result.retainedFirstMs = got.firstMs;
    log(`scale: one wildcard SUBSCRIBE got ${got.got}/${p.retained} retained at ${result.retainedPerSec.toFixed(0)}/s (first after ${got.firstMs.toFixed(0)} ms); broker RSS ${result.rssBeforeMiB.toFixed(0)} → peak ${result.rssPeakMiB.toFixed(0)} MiB`);
    // At QoS 1 the pages follow the subscriber's acknowledgements (QoS 0 has none to pace by).
    await sleep(2000);
    result.rssBeforeQos1MiB = rssMiB(broker.pid);
    const peak1 = rssSampler(broker.pid);
    const got1 = await receiveRetained(broker.wsUrl, "scale/ret/#", p.retained, p.timeoutMs, 1);
    result.rssPeakQos1MiB = peak1();
    result.retainedQos1Delivered = got1.got;
    result.retainedQos1PerSec = (got1.got / got1.ms) * 1000;
    log(`scale: the same at QoS 1: ${got1.got}/${p.retained} at ${result.retainedQos1PerSec.toFixed(0)}/s; broker RSS ${result.rssBeforeQos1MiB.toFixed(0)} → peak ${result.rssPeakQos1MiB.toFixed(0)} MiB`);

    // The runtime killed and restarted on the same state.
    const persistDir = broker.persistDir;
    await broker.stop({ keepState: true });
    broker = await startBroker({ vars, persistDir });
    result.wakeFirstDeliveryMs = await firstDeliveryMs(broker.wsUrl, "after-restart");
    log(`scale: after a restart with all of it stored, CONNECT → first delivery ${result.wakeFirstDeliveryMs.toFixed(0)} ms (empty broker: ${result.emptyFirstDeliveryMs.toFixed(0)} ms)`);

    // Fan-in with many publishers, beside aedes when it runs.
    const fan = { payload: 64, timeoutMs: p.timeoutMs, durationMs: p.fanInMs, maxMessages: 1_000_000, publishers: p.fanInPublishers, window: 1000 };
    result.fanIn = { broker: await fanIn(broker, fan, "scale") };
    if (aedes) result.fanIn.aedes = await fanIn(aedes, fan, "scale");
    log(`scale: fan-in of ${p.fanInPublishers} publishers: broker ${result.fanIn.broker.deliveriesPerSec.toFixed(0)} deliveries/s${aedes ? `, aedes ${result.fanIn.aedes.deliveriesPerSec.toFixed(0)}` : ""}`);
  } finally {
    await broker.stop();
  }
  result.shards = [];
  for (const shards of p.shardCounts) result.shards.push(await shardLoad(shards, p.load, log));
  return result;
}

/** The scale table for bench/results/*.md. */
export function scaleTable(r) {
  const one = r.shards.find((s) => s.shards === 1);
  const lines = [
    "| figure | value |",
    "| --- | --- |",
    `| retained stored | ${r.params.retained.toLocaleString("en-US")} × 1 KiB at ${r.storeRetainedPerSec.toFixed(0)}/s |`,
    `| one wildcard SUBSCRIBE | ${r.retainedDelivered.toLocaleString("en-US")} delivered at ${r.retainedPerSec.toFixed(0)} messages/s, first after ${r.retainedFirstMs.toFixed(0)} ms |`,
    `| broker RSS | ${r.rssBeforeMiB.toFixed(0)} MiB before, ${r.rssPeakMiB.toFixed(0)} MiB peak while delivering |`,
    `| the same SUBSCRIBE at QoS 1 (paced by PUBACKs) | ${r.retainedQos1Delivered.toLocaleString("en-US")} at ${r.retainedQos1PerSec.toFixed(0)} messages/s; RSS ${r.rssBeforeQos1MiB.toFixed(0)} → peak ${r.rssPeakQos1MiB.toFixed(0)} MiB |`,
    `| subscriptions stored | ${r.subscriptions.toLocaleString("en-US")} over ${Math.ceil(r.params.subscriptions / r.params.subscriptionsPerClient)} persistent sessions |`,
    `| CONNECT → first delivery after a restart on that state | ${r.wakeFirstDeliveryMs.toFixed(0)} ms (empty broker ${r.emptyFirstDeliveryMs.toFixed(0)} ms) |`,
    `| fan-in, ${r.params.fanInPublishers} publishers | broker ${r.fanIn.broker.deliveriesPerSec.toFixed(0)} deliveries/s, ${r.fanIn.broker.serverCpuUsPerDelivery?.toFixed(0) ?? "?"} µs CPU/delivery${r.fanIn.aedes ? `; aedes ${r.fanIn.aedes.deliveriesPerSec.toFixed(0)} (${(r.fanIn.broker.deliveriesPerSec / r.fanIn.aedes.deliveriesPerSec).toFixed(2)}×)` : ""} |`,
    ...r.shards.map(
      (s) =>
        `| busiest router object, ${s.shards} shard(s) | ${s.busiestRequestsPerSec.toFixed(0)} requests/s (${s.routerObjects} objects, ${s.totalRouterRequestsPerSec.toFixed(0)}/s in all) at ${s.offeredPerSec.toFixed(0)} publishes/s offered${one && s.shards !== 1 ? `: ${(s.busiestRequestsPerSec / Math.max(1, one.busiestRequestsPerSec)).toFixed(2)}× the single router's` : ""} |`,
    ),
  ];
  return lines.join("\n");
}
