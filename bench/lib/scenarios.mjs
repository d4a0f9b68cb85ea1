// The bench scenarios. Each one sets up its clients (not measured), waits until the server is
// quiet, measures one bounded phase (server CPU from /proc over the phase and until the server
// is quiet again, generator CPU, wall time), then tears down. Every loop is bounded in count
// and in time.
import WebSocket from "ws";
import { MqttClient, PINGREQ_BYTES, payloadStamp, publishBytes, stampedPayload } from "./client.mjs";
import { commandDelta, selfCpuMs, treeUsage } from "./proc.mjs";

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Waits until the server tree uses under `pct`% of a core for two 100 ms samples in a row (at most maxMs). */
export async function waitQuiet(pid, { pct = 5, maxMs = 4000 } = {}) {
  const end = performance.now() + maxMs;
  let prev = treeUsage(pid);
  let calm = 0;
  while (performance.now() < end) {
    await sleep(100);
    const cur = treeUsage(pid);
    const usedPct = ((cur.cpuMs - prev.cpuMs) / (cur.at - prev.at)) * 100;
    prev = cur;
    calm = usedPct < pct ? calm + 1 : 0;
    if (calm >= 2) return true;
  }
  return false;
}

/** Measures server CPU (whole process tree), generator CPU and wall time around a phase. */
class Meter {
  /** @param {number} [extraPid] another process to measure apart (the bridge of the native row) */
  constructor(peer, extraPid) {
    this.peer = peer;
    this.extraPid = extraPid;
  }
  async start() {
    await waitQuiet(this.peer.pid);
    if (this.extraPid) await waitQuiet(this.extraPid);
    if (this.peer.counters) await this.peer.counters.reset();
    this.server0 = treeUsage(this.peer.pid);
    this.extra0 = this.extraPid ? treeUsage(this.extraPid) : null;
    this.gen0 = selfCpuMs();
    this.t0 = performance.now();
  }
  /** Marks the end of the timed phase (throughput); CPU keeps counting until the server is quiet. */
  mark() {
    this.wallMs = performance.now() - this.t0;
    this.genMs = selfCpuMs() - this.gen0;
  }
  async stop() {
    if (this.wallMs === undefined) this.mark();
    await waitQuiet(this.peer.pid);
    if (this.extraPid) await waitQuiet(this.extraPid);
    const s1 = treeUsage(this.peer.pid);
    const extraCpuMs = this.extra0 ? treeUsage(this.extraPid).cpuMs - this.extra0.cpuMs : undefined;
    const counters = this.peer.counters ? await this.peer.counters.read() : null;
    const byComm = commandDelta(this.server0, s1);
    return {
      wallMs: this.wallMs,
      serverCpuMs: s1.cpuMs - this.server0.cpuMs,
      serverCpuMsByCommand: byComm,
      serverRssBytes: s1.rssBytes,
      ...(extraCpuMs !== undefined ? { bridgeCpuMs: extraCpuMs } : {}),
      generatorCpuMs: this.genMs,
      generatorCpuPct: (this.genMs / this.wallMs) * 100,
      counters,
    };
  }
}

/**
 * Opens `n` connections, at most `concurrency` at a time; returns the clients (null for failures).
 * `auth(id)`, when given, resolves to the connection's user name and password.
 * @param {string} url
 * @param {string[]} ids
 * @param {{concurrency?: number, keepalive?: number, auth?: (id: string) => Promise<{username: string, password: string}>}} [opts]
 */
async function connectMany(url, ids, { concurrency = 20, keepalive = 60, auth } = {}) {
  const clients = new Array(ids.length).fill(null);
  let next = 0;
  let failures = 0;
  let firstError = "";
  const worker = async () => {
    while (next < ids.length) {
      const i = next++;
      try {
        clients[i] = await MqttClient.connect(url, { clientId: ids[i], keepalive, timeoutMs: 30_000, ...(auth ? await auth(ids[i]) : {}) });
      } catch (err) {
        failures++;
        firstError ||= err instanceof Error ? err.message : String(err);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, ids.length) }, worker));
  return { clients, failures, firstError };
}

async function endAll(clients, concurrency = 50) {
  const list = clients.filter(Boolean);
  for (let i = 0; i < list.length; i += concurrency) await Promise.all(list.slice(i, i + concurrency).map((c) => c.end()));
}

/** Resolves when done() returns true, checked on each call of poke(), or after timeoutMs. */
function completion(timeoutMs) {
  let resolveFn;
  let timedOut = false;
  const promise = new Promise((r) => (resolveFn = r));
  const timer = setTimeout(() => {
    timedOut = true;
    resolveFn();
  }, timeoutMs);
  return {
    promise,
    finish() {
      clearTimeout(timer);
      resolveFn();
    },
    get timedOut() {
      return timedOut;
    },
  };
}

/** Finishes `done` early when any of `clients` loses its connection; returns a description getter. */
function watchLost(clients, done) {
  let lost = "";
  for (const c of clients) {
    c.onLost = (client) => {
      lost ||= `${client.clientId} closed by the server (${client.closeInfo})`;
      done.finish();
    };
  }
  return () => lost;
}

export function percentile(values, p) {
  if (values.length === 0) return NaN;
  const s = [...values].sort((a, b) => a - b);
  const i = Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1));
  return s[i];
}

// ---------------------------------------------------------------- fan-in / fan-out

/**
 * Closed-loop flow from `pubs` to `subs` (QoS 0, or `p.qos`): publishes (round robin over the
 * publishers, each to its own topic) while fewer than `window` deliveries are outstanding, for
 * `durationMs` or `maxMessages` publishes, whichever comes first; then waits for the
 * outstanding deliveries (at most `timeoutMs`). Each message reaches `fanout` subscribers
 * (all of `subs` by default; 1 for a shared group). With `checkOnce`, every payload carries
 * its sequence number (bytes 8–11) and each message must arrive exactly once across `subs`.
 */
async function flow(peer, pubs, topics, subs, p, { fanout = subs.length, checkOnce = false, extraPid } = {}) {
  const qos = p.qos ?? 0;
  const payload = stampedPayload(Math.max(p.payload, checkOnce ? 12 : 8));
  const seen = checkOnce ? new Uint8Array(p.maxMessages) : null;
  const perSub = new Array(subs.length).fill(0);
  let duplicates = 0;
  const meter = new Meter(peer, extraPid);
  await meter.start();
  const stopAt = meter.t0 + p.durationMs;
  let sent = 0;
  let delivered = 0;
  let sending = true;
  let scheduled = false;
  let lastDelivery = meter.t0;
  const done = completion(p.durationMs + p.timeoutMs);
  const pump = () => {
    scheduled = false;
    if (!sending) return;
    while (sent < p.maxMessages && sent * fanout - delivered < p.window) {
      const i = sent % pubs.length;
      if (seen) payload.writeUInt32BE(sent, 8);
      pubs[i].publish(topics[i], payload, qos);
      sent++;
    }
    if (sent >= p.maxMessages || performance.now() >= stopAt) sending = false;
  };
  const onMessage = (_topic, body) => {
    if (seen) {
      const k = body.readUInt32BE(8);
      if (seen[k]++ > 0) duplicates++;
    }
    delivered++;
    lastDelivery = performance.now();
    if (!sending && delivered >= sent * fanout) done.finish();
    else if (sending && !scheduled && sent * fanout - delivered <= p.window / 2) {
      scheduled = true;
      setImmediate(pump);
    }
  };
  subs.forEach((s, j) => {
    s.onMessage = (t, body) => {
      perSub[j]++;
      onMessage(t, body);
    };
  });
  const lost = watchLost([...pubs, ...subs], done);
  // Stops sending at the deadline even when no delivery comes back to pump again.
  const stopper = setTimeout(() => {
    sending = false;
    if (delivered >= sent * fanout) done.finish();
  }, p.durationMs);
  pump();
  await done.promise;
  clearTimeout(stopper);
  meter.mark();
  meter.wallMs = lastDelivery - meter.t0;
  const m = await meter.stop();
  const expected = sent * fanout;
  let missing = 0;
  if (seen) for (let k = 0; k < sent; k++) if (seen[k] === 0) missing++;
  const once = seen ? { duplicates, missing, perMemberMin: Math.min(...perSub), perMemberMax: Math.max(...perSub) } : {};
  const bridge = m.bridgeCpuMs !== undefined ? { bridgeCpuUsPerDelivery: (m.bridgeCpuMs * 1000) / Math.max(1, delivered), serverPlusBridgeCpuUsPerDelivery: ((m.serverCpuMs + m.bridgeCpuMs) * 1000) / Math.max(1, delivered) } : {};
  return {
    ...m,
    ...once,
    ...bridge,
    lost: lost() || (duplicates || missing ? `${duplicates} duplicate(s), ${missing} missing` : ""),
    sent,
    expected,
    delivered,
    complete: delivered >= expected && duplicates === 0 && missing === 0,
    deliveriesPerSec: (delivered / m.wallMs) * 1000,
    serverCpuUsPerDelivery: (m.serverCpuMs * 1000) / Math.max(1, delivered),
    generatorCpuUsPerDelivery: (m.generatorCpuMs * 1000) / Math.max(1, delivered),
  };
}

/**
 * P publishers, each to its own topic, QoS 0; one `bench/in/#` subscriber. With `native`, the
 * publishers and the subscriber connect over plain TCP: to `peer.tcpUrl`, which for the broker
 * is the bridge (`peer.bridge`, whose CPU is measured apart).
 */
export async function fanIn(peer, p, tag, { native = false } = {}) {
  const url = native ? peer.tcpUrl : peer.wsUrl;
  const id = native ? "fit" : "fi";
  const sub = await MqttClient.connect(url, { clientId: `${id}-sub-${tag}` });
  await sub.subscribe("bench/in/#", p.qos ?? 0);
  const { clients: pubs, failures } = await connectMany(url, Array.from({ length: p.publishers }, (_, i) => `${id}-pub-${tag}-${i}`));
  if (failures > 0) throw new Error(`fan-in${native ? " (TCP)" : ""}: ${failures} publishers could not connect`);
  const r = await flow(peer, pubs, pubs.map((_, i) => `bench/in/${i}`), [sub], p, { extraPid: native ? peer.bridge?.pid : undefined });
  await endAll([sub, ...pubs]);
  // A server that speaks TCP itself has no bridge: its server-side CPU is its own.
  if (native && !peer.bridge) r.serverPlusBridgeCpuUsPerDelivery = r.serverCpuUsPerDelivery;
  return r;
}

/**
 * 1 publisher → a shared subscription group of M members (`$share/bench/bench/shared`), QoS 0
 * (or `p.qos` 1, acknowledged by the members): each message must reach exactly one member.
 */
export async function shared(peer, p, tag) {
  const { clients: members, failures } = await connectMany(peer.wsUrl, Array.from({ length: p.members }, (_, i) => `sh-sub-${tag}-${i}`));
  if (failures > 0) throw new Error(`shared: ${failures} members could not connect`);
  const codes = await Promise.all(members.map((s) => s.subscribe("$share/bench/bench/shared", p.qos ?? 0)));
  if (codes.some((c) => c[0] >= 0x80)) throw new Error(`shared: SUBSCRIBE refused (${codes.map((c) => c[0]).join(",")})`);
  const pub = await MqttClient.connect(peer.wsUrl, { clientId: `sh-pub-${tag}` });
  const r = await flow(peer, [pub], ["bench/shared"], members, p, { fanout: 1, checkOnce: true });
  await endAll([pub, ...members]);
  return { ...r, members: p.members };
}

/**
 * Does the peer implement `$share/<group>/<filter>`? Two members, 20 QoS 0 messages: supported
 * when each message reaches exactly one member. Returns null if so, else what was seen.
 */
export async function probeShared(peer) {
  const members = await Promise.all([0, 1].map((i) => MqttClient.connect(peer.wsUrl, { clientId: `sh-probe-${i}` })));
  const codes = await Promise.all(members.map((m) => m.subscribe("$share/probe/bench/probe", 0)));
  const pub = await MqttClient.connect(peer.wsUrl, { clientId: "sh-probe-pub" });
  let got = 0;
  for (const m of members) m.onMessage = () => got++;
  const n = 20;
  for (let i = 0; i < n; i++) pub.publish("bench/probe", stampedPayload(8), 0);
  await pub.ping();
  await sleep(500);
  await Promise.all(members.map((m) => m.ping()));
  await endAll([pub, ...members]);
  if (got === n) return null;
  return `SUBACK ${codes.map((c) => `0x${c[0].toString(16).padStart(2, "0")}`).join("/")}, then ${got} deliveries of ${n} messages to 2 \`$share/probe/…\` members${got === 0 ? " (the filter is taken literally)" : got === 2 * n ? " (every member got every message)" : ""}`;
}

/** 1 publisher, S subscribers of `bench/out`, QoS 0 (or `p.qos` 1: publishes and subscriptions at QoS 1, acknowledged). */
export async function fanOut(peer, p, tag) {
  const { clients: subs, failures } = await connectMany(peer.wsUrl, Array.from({ length: p.subscribers }, (_, i) => `fo-sub-${tag}-${i}`));
  if (failures > 0) throw new Error(`fan-out: ${failures} subscribers could not connect`);
  await Promise.all(subs.map((s) => s.subscribe("bench/out", p.qos ?? 0)));
  const pub = await MqttClient.connect(peer.wsUrl, { clientId: `fo-pub-${tag}` });
  const r = await flow(peer, [pub], ["bench/out"], subs, p);
  await endAll([pub, ...subs]);
  return r;
}

// ---------------------------------------------------------------- QoS 1 round trip

/**
 * Each of `clients` clients subscribes to its own topic at QoS 1 and publishes QoS 1 to it,
 * one message at a time: PUBACK latency (publish → PUBACK) and delivery latency
 * (publish → the PUBLISH back), which it acknowledges.
 */
export async function qos1RoundTrip(peer, p, tag) {
  const { clients, failures } = await connectMany(peer.wsUrl, Array.from({ length: p.clients }, (_, i) => `rt-${tag}-${i}`));
  if (failures > 0) throw new Error(`qos1: ${failures} clients could not connect`);
  await Promise.all(clients.map((c, i) => c.subscribe(`bench/rt/${i}`, 1)));
  const puback = [];
  const delivery = [];
  const perClient = Math.ceil(p.maxMessages / p.clients);
  const meter = new Meter(peer);
  await meter.start();
  const stopAt = meter.t0 + p.durationMs;
  const deadline = stopAt + p.timeoutMs;
  const loop = async (c, i) => {
    const topic = `bench/rt/${i}`;
    for (let k = 0; k < perClient && performance.now() < stopAt && !c.closed; k++) {
      await new Promise((resolve) => {
        let acked = false;
        let got = false;
        const t0 = performance.now();
        const timer = setTimeout(resolve, Math.max(1, deadline - t0));
        c.onLost = () => {
          clearTimeout(timer);
          resolve();
        };
        const check = () => {
          if (acked && got) {
            clearTimeout(timer);
            resolve();
          }
        };
        c.onPuback = () => {
          puback.push(performance.now() - t0);
          acked = true;
          check();
        };
        c.onMessage = (_t, payload) => {
          delivery.push(performance.now() - payloadStamp(payload));
          got = true;
          check();
        };
        c.publish(topic, stampedPayload(p.payload), 1);
      });
    }
  };
  await Promise.all(clients.map(loop));
  meter.mark();
  const m = await meter.stop();
  await endAll(clients);
  const n = Math.min(puback.length, delivery.length);
  return {
    ...m,
    expected: puback.length,
    delivered: delivery.length,
    complete: delivery.length >= puback.length && puback.length > 0,
    roundTripsPerSec: (n / m.wallMs) * 1000,
    pubackP50Ms: percentile(puback, 50),
    pubackP99Ms: percentile(puback, 99),
    deliveryP50Ms: percentile(delivery, 50),
    deliveryP99Ms: percentile(delivery, 99),
    serverCpuUsPerDelivery: (m.serverCpuMs * 1000) / Math.max(1, delivery.length),
  };
}

// ---------------------------------------------------------------- connect storm + idle hold

/** The part of `totalMs` a deployed server also spends: a `wrangler dev` peer's runtime processes alone, another server's whole tree. */
function runtimeCpuMs(peer, totalMs, byCommand) {
  return peer.runtimeCommand ? (byCommand[peer.runtimeCommand] ?? 0) : totalMs;
}

/**
 * C connections (keep alive 60 s) with bounded concurrency: connects/s and CONNACK latency
 * (socket creation → CONNACK); then the connections stay idle for `holdMs` and the server's
 * RSS growth per held connection is read.
 */
export async function connectStorm(peer, p, tag) {
  await waitQuiet(peer.pid);
  const rssBefore = treeUsage(peer.pid).rssBytes;
  const meter = new Meter(peer);
  await meter.start();
  const ids = Array.from({ length: p.connections }, (_, i) => `storm-${i}`);
  const { clients, failures, firstError } = await connectMany(peer.wsUrl, ids, { concurrency: p.concurrency, keepalive: 60 });
  meter.mark();
  const m = await meter.stop();
  const ok = clients.filter(Boolean);
  const connack = ok.map((c) => c.connackMs);
  // Idle hold: sample RSS through the hold, keep the last (steady) value.
  const holdStart = treeUsage(peer.pid);
  await sleep(p.holdMs);
  const holdEnd = treeUsage(peer.pid);
  // The closes: from the first DISCONNECT (right after the hold) until the server is quiet again (the teardown's calls and storage).
  await endAll(ok);
  await waitQuiet(peer.pid);
  const closed = treeUsage(peer.pid);
  const closeMs = closed.cpuMs - holdEnd.cpuMs;
  void tag;
  return {
    ...m,
    expected: p.connections,
    delivered: ok.length,
    complete: failures === 0,
    failures,
    firstError,
    connectsPerSec: (ok.length / m.wallMs) * 1000,
    connackP50Ms: percentile(connack, 50),
    connackP99Ms: percentile(connack, 99),
    serverCpuMsPerConnect: m.serverCpuMs / Math.max(1, ok.length),
    serverCpuMsPerClose: closeMs / Math.max(1, ok.length),
    runtimeCpuMsPerConnect: runtimeCpuMs(peer, m.serverCpuMs, m.serverCpuMsByCommand) / Math.max(1, ok.length),
    runtimeCpuMsPerClose: runtimeCpuMs(peer, closeMs, commandDelta(holdEnd, closed)) / Math.max(1, ok.length),
    rssBeforeBytes: rssBefore,
    rssHeldBytes: holdEnd.rssBytes,
    rssKiBPerConnection: (holdEnd.rssBytes - rssBefore) / 1024 / Math.max(1, ok.length),
    idleCpuPctDuringHold: ((holdEnd.cpuMs - holdStart.cpuMs) / (holdEnd.at - holdStart.at)) * 100,
  };
}

// ---------------------------------------------------------------- retained on subscribe

/** N retained topics (stored with QoS 1 publishes beforehand), then one `bench/ret/#` subscriber: time until all N arrive. */
export async function retainedOnSubscribe(peer, p, tag) {
  const pub = await MqttClient.connect(peer.wsUrl, { clientId: `ret-pub-${tag}` });
  const payload = stampedPayload(p.payload);
  const storeAll = async (body) => {
    let sent = 0;
    let acked = 0;
    const done = completion(p.timeoutMs);
    const pump = () => {
      while (sent < p.topics && sent - acked < 100) pub.publish(`bench/ret/${sent++}`, body, 1, true);
    };
    pub.onPuback = () => {
      acked++;
      if (acked >= p.topics) done.finish();
      else pump();
    };
    pump();
    await done.promise;
    return acked;
  };
  const stored = await storeAll(payload);
  if (stored < p.topics) throw new Error(`retained: only ${stored}/${p.topics} retained publishes acknowledged`);
  const sub = await MqttClient.connect(peer.wsUrl, { clientId: `ret-sub-${tag}` });
  // Repeated SUBSCRIBEs of the same filter: each one delivers every retained message again
  // [MQTT-3.8.4-3]. Cycles until durationMs (at least one) or maxCycles.
  const meter = new Meter(peer);
  await meter.start();
  const stopAt = meter.t0 + p.durationMs;
  let delivered = 0;
  let complete = true;
  const cycleMs = [];
  const firstMs = [];
  while (cycleMs.length < p.maxCycles && (cycleMs.length === 0 || performance.now() < stopAt)) {
    const t0 = performance.now();
    let got = 0;
    const done = completion(p.timeoutMs);
    sub.onMessage = (_t, _payload, _qos, retain) => {
      if (!retain) return;
      if (got === 0) firstMs.push(performance.now() - t0);
      got++;
      delivered++;
      if (got >= p.topics) done.finish();
    };
    sub.onLost = () => done.finish();
    void sub.subscribe("bench/ret/#", p.subQos);
    await done.promise;
    if (done.timedOut || sub.closed) {
      complete = false;
      break;
    }
    cycleMs.push(performance.now() - t0);
  }
  meter.mark();
  const m = await meter.stop();
  await sub.end();
  // Clear the retained messages so later rounds start from the same state.
  await storeAll(Buffer.alloc(0));
  await pub.end();
  return {
    ...m,
    cycles: cycleMs.length,
    expected: p.topics * Math.max(1, cycleMs.length),
    delivered,
    complete,
    retainedPerSec: (delivered / m.wallMs) * 1000,
    firstRetainedP50Ms: percentile(firstMs, 50),
    allRetainedP50Ms: percentile(cycleMs, 50),
    serverCpuUsPerDelivery: (m.serverCpuMs * 1000) / Math.max(1, delivered),
  };
}

// ---------------------------------------------------------------- cost (broker counters)

/**
 * One publisher, one subscriber, N messages at `qos`: paced (one message at a time, as a
 * sparse sensor would) or in a burst (up to `window` in flight, which lets the broker batch).
 * Returns the billable units the broker counted, per message.
 */
export async function costMessages(peer, { qos, mode, messages, window = 100, payload: size = 64, timeoutMs = 60_000, persistent = false, subscribers = 1, holdAcks = false }, tag) {
  const subs = [];
  for (let i = 0; i < subscribers; i++) {
    const sub = await MqttClient.connect(peer.wsUrl, { clientId: `cost-sub-${tag}-${i}`, clean: !persistent });
    await sub.subscribe("bench/cost", qos);
    subs.push(sub);
  }
  // `holdAcks`: the subscribers acknowledge nothing until the publisher has every PUBACK (each
  // message durable at its subscriber), so what does not fit their in-flight window waits there.
  const held = subs.map(() => []);
  if (holdAcks) for (const sub of subs) sub.autoAck = false;
  const release = () => {
    subs.forEach((sub, i) => {
      sub.autoAck = true;
      for (const pid of held[i].splice(0)) sub.puback(pid);
    });
  };
  const pub = await MqttClient.connect(peer.wsUrl, { clientId: `cost-pub-${tag}` });
  const meter = new Meter(peer);
  await meter.start();
  let sent = 0;
  let delivered = 0;
  let acked = 0;
  const done = completion(timeoutMs);
  const limit = mode === "paced" ? 1 : window;
  // A message is through once every subscriber has it (and, at QoS 1, the publisher its PUBACK).
  const through = () => Math.min(Math.floor(delivered / subscribers), qos === 0 ? Number.POSITIVE_INFINITY : acked);
  const finished = () => through() >= messages;
  const pump = () => {
    while (sent < messages && sent - through() < limit) {
      pub.publish("bench/cost", stampedPayload(size), qos);
      sent++;
    }
  };
  const progress = () => {
    if (finished()) done.finish();
    else pump();
  };
  subs.forEach((sub, i) => {
    sub.onMessage = (_topic, _payload, _qos, _retain, pid) => {
      delivered++;
      if (!sub.autoAck && pid) held[i].push(pid);
      progress();
    };
  });
  pub.onPuback = () => {
    acked++;
    if (holdAcks && acked >= messages) release();
    progress();
  };
  pump();
  await done.promise;
  // Barrier: each connection answers a PINGREQ only after the packets before it (the
  // subscribers' PUBACKs), so every unit of these messages is counted once all answer.
  await Promise.all([...subs, pub].map((c) => c.ping()));
  meter.mark();
  const m = await meter.stop();
  await endAll([...subs, pub]);
  if (persistent) {
    // End the persistent sessions (a clean connect of each client id), or their offline queues
    // would take every later row's messages (and count their rows).
    await endAll(await Promise.all(subs.map((_, i) => MqttClient.connect(peer.wsUrl, { clientId: `cost-sub-${tag}-${i}`, clean: true }))));
  }
  const c = m.counters;
  if (c) c.totals.wsIn -= subscribers + 1; // the barrier PINGREQs
  return { ...m, qos, mode, subscribers, expected: messages * subscribers, delivered, published: Math.min(sent, messages), complete: delivered >= messages * subscribers, serverCpuUsPerDelivery: (m.serverCpuMs * 1000) / Math.max(1, delivered) };
}

/**
 * Idle connections that only keep alive: C connections with keep alive K seconds, each
 * sending PINGREQ every K seconds, counted over a window of whole keep-alive periods once in
 * steady state. The broker's units per PINGREQ scale to an idle connection-day at 60 s keep
 * alive (1,440 PINGREQs) as long as 1.5 K + 1 s < 2 K (K > 2 s): then, as at K = 60 s, the
 * keep-alive alarm fires once per period.
 */
export async function costIdle(peer, { connections, keepalive, periods }, tag) {
  const ids = Array.from({ length: connections }, (_, i) => `idle-${tag}-${i}`);
  const { clients, failures } = await connectMany(peer.wsUrl, ids, { concurrency: 20, keepalive });
  if (failures > 0) throw new Error(`idle: ${failures} clients could not connect`);
  const periodMs = keepalive * 1000;
  let running = true;
  let window = null; // [t0, t1] while counting
  let pings = 0;
  const loops = clients.map(async (c, i) => {
    await sleep((periodMs / connections) * i); // spread the pings over the period
    while (running && !c.closed) {
      const t = performance.now();
      if (window && t >= window[0] && t < window[1]) pings++;
      await c.ping();
      await sleep(periodMs - (performance.now() - t));
    }
  });
  await sleep(2 * periodMs + 500); // steady state: every connection has pinged and its alarm follows the pings
  if (peer.counters) await peer.counters.reset();
  const s0 = treeUsage(peer.pid);
  const g0 = selfCpuMs();
  const t0 = performance.now();
  window = [t0, t0 + periods * periodMs];
  await sleep(periods * periodMs);
  const counters = peer.counters ? await peer.counters.read() : null;
  const s1 = treeUsage(peer.pid);
  const wallMs = performance.now() - t0;
  const generatorCpuMs = selfCpuMs() - g0;
  running = false;
  await Promise.all(loops);
  const dropped = clients.filter((c) => c.closed).length;
  await endAll(clients);
  await waitQuiet(peer.pid);
  const serverCpuMs = s1.cpuMs - s0.cpuMs;
  return {
    dropped,
    wallMs,
    serverCpuMs,
    generatorCpuMs,
    counters,
    connections,
    keepalive,
    pings,
    expected: connections * periods,
    delivered: pings,
    complete: dropped === 0,
    serverCpuUsPerPing: (serverCpuMs * 1000) / Math.max(1, pings),
  };
}

// ---------------------------------------------------------------- a bystander while another account floods

/**
 * QoS 1 round trips of `client` on `topic` (its own subscription), open loop: one publish every
 * `intervalMs` for `ms`, whatever is still in flight (so a stall shows in the percentiles
 * instead of hiding between samples), each matched to its PUBACK and its delivery by packet id
 * and by a sequence number in the payload (bytes 8–11); then at most `timeoutMs` for the last
 * ones. A round trip is publish → both PUBACK and delivery. Returns the round-trip times (ms)
 * and how many never completed.
 * @param {MqttClient} client
 * @param {string} topic
 * @param {number} size payload bytes (at least 12)
 * @param {number} ms
 * @param {number} timeoutMs
 * @param {number} intervalMs
 * @returns {Promise<{rtts: number[], sent: number, unfinished: number}>}
 */
async function roundTrips(client, topic, size, ms, timeoutMs, intervalMs) {
  /** @type {Map<number, {t0: number, acked: boolean, got: boolean}>} */
  const open = new Map();
  /** @type {Map<number, number>} packet id → sequence number */
  const bySeq = new Map();
  const rtts = [];
  const settle = (seq) => {
    const e = open.get(seq);
    if (!e || !e.acked || !e.got) return;
    rtts.push(performance.now() - e.t0);
    open.delete(seq);
  };
  client.onPuback = (pid) => {
    const seq = bySeq.get(pid);
    bySeq.delete(pid);
    const e = seq === undefined ? undefined : open.get(seq);
    if (e) {
      e.acked = true;
      settle(seq);
    }
  };
  client.onMessage = (_t, body) => {
    const seq = body.readUInt32BE(8);
    const e = open.get(seq);
    if (e) {
      e.got = true;
      settle(seq);
    }
  };
  let sent = 0;
  const stopAt = performance.now() + ms;
  while (performance.now() < stopAt && !client.closed) {
    const t0 = performance.now();
    const payload = stampedPayload(Math.max(12, size));
    payload.writeUInt32BE(sent, 8);
    open.set(sent, { t0, acked: false, got: false });
    bySeq.set(client.publish(topic, payload, 1), sent);
    sent++;
    const wait = t0 + intervalMs - performance.now();
    if (wait > 0) await sleep(wait);
  }
  const deadline = performance.now() + timeoutMs;
  while (open.size > 0 && !client.closed && performance.now() < deadline) await sleep(10);
  return { rtts, sent, unfinished: open.size };
}

/**
 * The broker's answer to a noisy neighbour. A bystander in one account (anonymous, `bench`)
 * runs QoS 1 round trips to its own subscription, one every `intervalMs` (open loop; it is held
 * to the same publish budget), for `durationMs` with the broker quiet, then
 * again while another account (`flood`, JWT identities from `auth`) floods it: `flooders`
 * connections publishing QoS 0 as fast as the broker's publish budget lets them (a burst of
 * `floodBurst`, then `floodRate` per second each, under the default budget of 200 and 100/s),
 * one subscriber of the flood account receiving every message, and `frameFlooders` loops that
 * each connect, send one frame of `frameFloodPackets` PINGREQs (more than
 * MAX_PACKETS_PER_FRAME: refused whole by closing the connection) and start again. Round-trip
 * p50 and p99, quiet and flooded, and their ratios; the flood's rates; server CPU in each phase.
 * Meant for a broker with the default rate limits (bench/run.mjs starts one for it).
 * @param {{wsUrl: string, pid: number}} peer
 * @param {{durationMs: number, intervalMs: number, timeoutMs: number, payload: number, flooders: number, floodRate: number, floodBurst: number, frameFlooders: number, frameFloodPackets: number, rampMs: number}} p
 * @param {string} tag
 * @param {(id: string) => Promise<{username: string, password: string}>} auth
 */
export async function bystander(peer, p, tag, auth) {
  const topic = `bench/by/${tag}`;
  const by = await MqttClient.connect(peer.wsUrl, { clientId: `by-${tag}` });
  await by.subscribe(topic, 1);
  const cpuPct = (a, b) => ((b.cpuMs - a.cpuMs) / (b.at - a.at)) * 100;

  await waitQuiet(peer.pid);
  const q0 = treeUsage(peer.pid);
  const quiet = await roundTrips(by, topic, p.payload, p.durationMs, p.timeoutMs, p.intervalMs);
  const q1 = treeUsage(peer.pid);

  // The flood account: its subscriber, then the publishers.
  const floodSub = await MqttClient.connect(peer.wsUrl, { clientId: `fl-sub-${tag}`, ...(await auth(`fl-sub-${tag}`)) });
  await floodSub.subscribe("bench/flood/#", 0);
  let floodDelivered = 0;
  floodSub.onMessage = () => floodDelivered++;
  const { clients, failures } = await connectMany(peer.wsUrl, Array.from({ length: p.flooders }, (_, i) => `fl-pub-${tag}-${i}`), { auth });
  if (failures > 0) throw new Error(`bystander: ${failures} flooders could not connect`);
  const pubs = clients.filter(Boolean);
  const floodPayload = stampedPayload(p.payload);
  let floodSent = 0;
  const credit = pubs.map(() => p.floodBurst);
  let last = performance.now();
  const pacer = setInterval(() => {
    const now = performance.now();
    const dt = (now - last) / 1000;
    last = now;
    pubs.forEach((c, i) => {
      if (c.closed) return;
      credit[i] += p.floodRate * dt;
      for (; credit[i] >= 1; credit[i]--) {
        c.publish(`bench/flood/${i}`, floodPayload, 0);
        floodSent++;
      }
    });
  }, 20);
  let flooding = true;
  let frameFloods = 0;
  let frameFloodsClosed = 0;
  const floodFrame = Buffer.concat(Array.from({ length: p.frameFloodPackets }, () => PINGREQ_BYTES));
  const frameLoop = async (g) => {
    for (let k = 0; flooding; k++) {
      const id = `ff-${tag}-${g}-${k}`;
      let c;
      try {
        c = await MqttClient.connect(peer.wsUrl, { clientId: id, timeoutMs: p.timeoutMs, ...(await auth(id)) });
      } catch {
        await sleep(100);
        continue;
      }
      c.ending = true; // the close is the expected answer, not a lost connection
      const closed = new Promise((resolve) => c.sock.once("close", resolve));
      c.send(floodFrame);
      frameFloods++;
      await Promise.race([closed, sleep(5000)]);
      if (c.closed) frameFloodsClosed++;
      c.kill();
    }
  };
  const frameLoops = Array.from({ length: p.frameFlooders }, (_, g) => frameLoop(g));
  await sleep(p.rampMs);

  const f0 = treeUsage(peer.pid);
  const g0 = selfCpuMs();
  const sent0 = floodSent;
  const delivered0 = floodDelivered;
  const frames0 = frameFloods;
  const flood = await roundTrips(by, topic, p.payload, p.durationMs, p.timeoutMs, p.intervalMs);
  const f1 = treeUsage(peer.pid);
  const generatorCpuMs = selfCpuMs() - g0;
  const wallMs = f1.at - f0.at;
  flooding = false;
  clearInterval(pacer);
  await Promise.all(frameLoops);
  const floodersClosed = pubs.filter((c) => c.closed).length;
  const lost = by.closed ? `the bystander was closed (${by.closeInfo})` : "";
  await endAll([by, floodSub, ...pubs]);
  await waitQuiet(peer.pid);
  const q = { p50: percentile(quiet.rtts, 50), p99: percentile(quiet.rtts, 99) };
  const f = { p50: percentile(flood.rtts, 50), p99: percentile(flood.rtts, 99) };
  const unfinished = quiet.unfinished + flood.unfinished;
  return {
    wallMs,
    serverCpuMs: f1.cpuMs - f0.cpuMs,
    generatorCpuMs,
    generatorCpuPct: (generatorCpuMs / wallMs) * 100,
    expected: quiet.sent + flood.sent,
    delivered: quiet.rtts.length + flood.rtts.length,
    complete: unfinished === 0 && quiet.rtts.length > 0 && flood.rtts.length > 0 && !lost,
    lost: lost || (unfinished ? `${unfinished} round trip(s) unfinished after ${p.timeoutMs} ms` : ""),
    quietRoundTrips: quiet.rtts.length,
    floodRoundTrips: flood.rtts.length,
    quietP50Ms: q.p50,
    quietP99Ms: q.p99,
    floodP50Ms: f.p50,
    floodP99Ms: f.p99,
    p50Ratio: f.p50 / q.p50,
    p99Ratio: f.p99 / q.p99,
    floodPublishesPerSec: ((floodSent - sent0) / wallMs) * 1000,
    floodDeliveriesPerSec: ((floodDelivered - delivered0) / wallMs) * 1000,
    frameFloodsPerSec: ((frameFloods - frames0) / wallMs) * 1000,
    frameFloods,
    frameFloodsClosed,
    floodersClosed,
    serverCpuPctQuiet: cpuPct(q0, q1),
    serverCpuPctFlood: cpuPct(f0, f1),
  };
}

// ---------------------------------------------------------------- runtime floor

/**
 * What the local runtime charges per incoming WebSocket frame before any broker work: S
 * sockets (10, like fan-in's publishers) to the naive peer's do-nothing hibernatable object
 * (`peer.floorUrl`), each sent N / S binary frames the size of fan-in's PUBLISH (one packet per
 * frame, as MQTT clients send), 50 at a time per socket, each batch closed by a text frame the
 * object answers. Server CPU per frame is measured like every other row (the whole tree).
 */
export async function frameFloor(peer, p) {
  const sockets = await Promise.all(
    Array.from({ length: p.sockets }, () => new Promise((ok, fail) => {
      const ws = new WebSocket(peer.floorUrl);
      ws.once("open", () => ok(ws));
      ws.once("error", fail);
    })),
  );
  const frame = publishBytes("bench/in/0", stampedPayload(p.payload), 0, 0);
  const perSocket = Math.ceil(p.frames / p.sockets);
  const meter = new Meter(peer);
  await meter.start();
  for (let sent = 0; sent < perSocket; sent += 50) {
    const n = Math.min(50, perSocket - sent);
    await Promise.all(sockets.map((ws) => new Promise((ok) => {
      for (let i = 0; i < n; i++) ws.send(frame);
      ws.once("message", ok);
      ws.send("?");
    })));
  }
  meter.mark();
  const m = await meter.stop();
  for (const ws of sockets) ws.close();
  const frames = perSocket * p.sockets;
  return { ...m, frames, complete: true, framesPerSec: (frames / m.wallMs) * 1000, serverCpuUsPerFrame: (m.serverCpuMs * 1000) / frames };
}
