#!/usr/bin/env node
// `npm run bench [-- --quick] [-- flags]`: the broker (wrangler dev, local mode) side by side
// with the naive Durable Object design (bench/peers/naive), aedes (and mosquitto when it is on the PATH), driven by one lean load generator over
// WebSocket, scenarios interleaved over repeated rounds; medians and broker/peer ratios, and
// the broker's own billable-unit counters turned into a cost per message and per idle
// connection-day. Writes bench/results/bench-<time>.{json,md} and prints the tables.
// See bench/README.md.
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { cpus, loadavg, totalmem } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { spawnSync } from "node:child_process";
import { bystander, connectStorm, costIdle, costMessages, fanIn, fanOut, frameFloor, probeShared, qos1RoundTrip, retainedOnSubscribe, shared } from "./lib/scenarios.mjs";
import { findMosquitto, startAedes, startBridge, startBroker, startLimitedBroker, startMosquitto, startNaive, setStateInRam, setViaProxy, stopAllNow, wranglerVars } from "./lib/servers.mjs";
import { scale, scaleTable } from "./lib/scale.mjs";
import { storm, stormTable } from "./lib/storm.mjs";
import { connectTable, costTable, doDollars, generatorTable, idleTable, performanceTable, ratios, summarize, unitsPer } from "./lib/report.mjs";

const HERE = dirname(fileURLToPath(import.meta.url));
const started = Date.now();

const { values: flags } = parseArgs({
  options: {
    quick: { type: "boolean", default: false },
    rounds: { type: "string" },
    peers: { type: "string", default: "broker,naive,aedes,mosquitto" },
    scenarios: { type: "string", default: "fan-in,fan-in-qos1,fan-in-tcp,fan-out,fan-out-qos1,shared,qos1,connect,retained,floor,floor-proxy,bystander,cost,scale,storm" },
    publishers: { type: "string" },
    "duration-ms": { type: "string" },
    "qos1-duration-ms": { type: "string" },
    "max-messages": { type: "string" },
    subscribers: { type: "string" },
    members: { type: "string" },
    "shared-qos": { type: "string" },
    window: { type: "string" },
    "rt-clients": { type: "string" },
    connections: { type: "string" },
    concurrency: { type: "string" },
    "hold-ms": { type: "string" },
    retained: { type: "string" },
    "retained-sub-qos": { type: "string" },
    "retained-cycles": { type: "string" },
    payload: { type: "string" },
    "cost-messages": { type: "string" },
    "cost-fan-out": { type: "string" },
    "idle-checks": { type: "string" },
    "idle-clock": { type: "string" },
    "idle-connections": { type: "string" },
    "idle-periods": { type: "string" },
    "timeout-ms": { type: "string" },
    "bystander-ms": { type: "string" },
    "bystander-rate": { type: "string" },
    flooders: { type: "string" },
    "flood-rate": { type: "string" },
    "flood-burst": { type: "string" },
    "frame-flooders": { type: "string" },
    "frame-flood-packets": { type: "string" },
    "scale-retained": { type: "string" },
    "scale-subscriptions": { type: "string" },
    "scale-fan-in-publishers": { type: "string" },
    "scale-devices": { type: "string" },
    "scale-device-rate": { type: "string" },
    "scale-shards": { type: "string" },
    "storm-connections": { type: "string" },
    "storm-via-proxy": { type: "boolean", default: false },
    "via-proxy": { type: "boolean", default: false },
    "state-in-ram": { type: "boolean", default: false },
    out: { type: "string", default: join(HERE, "results") },
    help: { type: "boolean", default: false },
  },
});

if (flags.help) {
  console.log(readFileSync(join(HERE, "README.md"), "utf8").split("## Flags")[1]?.split("\n## ")[0] ?? "see bench/README.md");
  process.exit(0);
}

const q = flags.quick;
setViaProxy(flags["via-proxy"]);
setStateInRam(flags["state-in-ram"]);
const defaults = Object.fromEntries(Object.entries(wranglerVars()).map(([k, v]) => [k, Number(v)]));
const num = (name, full, quick) => {
  const v = flags[name];
  if (v === undefined) return q ? quick : full;
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0) throw new Error(`--${name} wants a number, got ${v}`);
  return n;
};

const params = {
  rounds: num("rounds", 5, 3),
  payload: num("payload", 64, 64),
  timeoutMs: num("timeout-ms", 60_000, 20_000),
  durationMs: num("duration-ms", 5000, 1000),
  // The QoS 1 rows swing most between short rounds (0.70x to 1.19x aedes in 1 s quick rounds of the same code): 3 s even when quick.
  qos1DurationMs: num("qos1-duration-ms", 5000, 3000),
  maxMessages: num("max-messages", 1_000_000, 200_000),
  fanIn: { publishers: num("publishers", 50, 10), window: num("window", 1000, 500) },
  fanOut: { subscribers: num("subscribers", 100, 20), window: num("window", 2000, 1000) },
  shared: { members: num("members", 8, 4), qos: num("shared-qos", 0, 0), window: num("window", 1000, 500) },
  qos1: { clients: num("rt-clients", 1, 1) },
  connect: { connections: num("connections", 1000, 200), concurrency: num("concurrency", 50, 20), holdMs: num("hold-ms", 10_000, 1500) },
  retained: { topics: num("retained", 1000, 200), subQos: num("retained-sub-qos", 0, 0), maxCycles: num("retained-cycles", 1000, 1000) },
  cost: {
    messages: num("cost-messages", 500, 100),
    window: 100,
    fanOut: num("cost-fan-out", 100, 100),
    idleConnections: num("idle-connections", 50, 20),
    idlePeriods: num("idle-periods", 10, 5),
    idleKeepalive: 3,
    // KEEPALIVE_CHECK_SECONDS as a multiple of the keep alive: 0 (exact), and 5 × (300 s at keep alive 60 s) on a broker of its own.
    idleChecks: (flags["idle-checks"] ?? "0,5").split(",").map(Number),
    // And the exact setting with the account's keep-alive clock (KEEPALIVE_CLOCK = shared), on a broker of its own.
    idleClock: (flags["idle-clock"] ?? "1") !== "0",
  },
  // The flood stays just inside the default budgets of wrangler.toml, which its broker keeps.
  bystander: {
    durationMs: num("bystander-ms", 10_000, 3000),
    intervalMs: 1000 / num("bystander-rate", defaults.PUBLISH_RATE_PER_SECOND / 2, defaults.PUBLISH_RATE_PER_SECOND / 2),
    flooders: num("flooders", 100, 20),
    floodRate: num("flood-rate", 0.9 * defaults.PUBLISH_RATE_PER_SECOND, 0.9 * defaults.PUBLISH_RATE_PER_SECOND),
    floodBurst: num("flood-burst", defaults.PUBLISH_BURST / 2, defaults.PUBLISH_BURST / 2),
    frameFlooders: num("frame-flooders", 4, 2),
    frameFloodPackets: num("frame-flood-packets", 4 * defaults.MAX_PACKETS_PER_FRAME, 4 * defaults.MAX_PACKETS_PER_FRAME),
    rampMs: 500,
  },
  // A fleet reconnecting after a restart (bench/lib/storm.mjs): run once, after the rounds.
  storm: { connections: num("storm-connections", 5000, 500), concurrency: num("concurrency", 50, 50), holdMs: 3000, viaProxy: flags["storm-via-proxy"] },
  floor: { frames: q ? 20_000 : 50_000 },
  // The router with a large account (bench/lib/scale.mjs): run once, after the rounds.
  scale: {
    retained: num("scale-retained", 100_000, 10_000),
    subscriptions: num("scale-subscriptions", 10_000, 1000),
    subscriptionsPerClient: 100,
    fanInPublishers: num("scale-fan-in-publishers", 100, 100),
    fanInMs: q ? 2000 : 5000,
    timeoutMs: 600_000,
    shardCounts: (flags["scale-shards"] ?? "1,4,16").split(",").map(Number),
    load: { devices: num("scale-devices", 100, 64), ratePerDevice: num("scale-device-rate", 10, 10), ms: q ? 4000 : 10_000, payload: 64 },
  },
};
const wanted = new Set(flags.peers.split(",").map((s) => s.trim()));
const scenarios = flags.scenarios.split(",").map((s) => s.trim());

const log = (...a) => console.log(`[bench ${((Date.now() - started) / 1000).toFixed(0).padStart(3)} s]`, ...a);

for (const sig of ["SIGINT", "SIGTERM"]) {
  process.on(sig, () => {
    stopAllNow();
    process.exit(130);
  });
}

/** Scenarios only the broker runs: with nothing else selected, aedes and mosquitto are not started. */
const BROKER_ONLY = new Set(["bystander", "cost", "storm"]);
const brokerOnly = scenarios.every((s) => BROKER_ONLY.has(s));

const peers = [];
async function main() {
  log(`starting servers (${q ? "quick" : "full"} run, ${params.rounds} rounds)`);
  if (wanted.has("broker")) {
    // The bystander scenario has a broker of its own, with the default rate limits; started alongside.
    const [broker, limited] = await Promise.all([startBroker(), scenarios.includes("bystander") ? startLimitedBroker() : null]);
    peers.push(broker);
    if (limited) {
      broker.limited = limited;
      log(`bystander broker (default rate limits ${Object.entries(limited.limits).map(([k, v]) => `${k}=${v}`).join(", ")}): pid ${limited.pid}`);
    }
    // The native row: plain TCP through the project's bridge (its own process, its own PID).
    if (scenarios.includes("fan-in-tcp")) {
      broker.bridge = await startBridge(broker.wsUrl);
      broker.tcpUrl = broker.bridge.tcpUrl;
    }
  }
  if (wanted.has("naive") && !brokerOnly) peers.push(await startNaive());
  if (wanted.has("aedes") && !brokerOnly) peers.push(await startAedes());
  const mosquittoBin = findMosquitto();
  if (wanted.has("mosquitto") && !brokerOnly) {
    if (mosquittoBin) peers.push(await startMosquitto(mosquittoBin));
    else log("mosquitto is not on the PATH: compared with aedes only");
  }
  log(`peers: ${peers.map((p) => `${p.label} pid ${p.pid}${p.bridge ? ` (bridge pid ${p.bridge.pid})` : ""}`).join("; ")}`);
  const load0 = loadavg();

  // Shared subscriptions: measured only on peers that implement them (aedes 1.2 does not).
  const unsupported = {};
  for (const peer of peers) for (const scenario of peer.lacks ?? []) (unsupported[scenario] ??= {})[peer.name] = "keeps no retained messages";
  if (scenarios.includes("shared")) {
    for (const peer of peers) {
      const why = await probeShared(peer);
      if (why) {
        (unsupported.shared ??= {})[peer.name] = why;
        log(`shared: ${peer.name} does not implement $share: ${why}`);
      }
    }
  }

  // Warm-up (JIT, first object creation), not recorded.
  for (const peer of peers) {
    const warm = { payload: params.payload, timeoutMs: params.timeoutMs, durationMs: 300, maxMessages: 2000 };
    await fanIn(peer, { ...warm, publishers: 4, window: 200 }, "warm");
    await qos1RoundTrip(peer, { ...warm, clients: 1 }, "warm");
    if (peer.tcpUrl && scenarios.includes("fan-in-tcp")) await fanIn(peer, { ...warm, publishers: 4, window: 200 }, "warm", { native: true });
    if (peer.limited) await qos1RoundTrip(peer.limited, { ...warm, clients: 1 }, "warm");
  }

  const common = { payload: params.payload, timeoutMs: params.timeoutMs, durationMs: params.durationMs, maxMessages: params.maxMessages };
  const table = {
    "fan-in": (peer, tag) => fanIn(peer, { ...common, ...params.fanIn }, tag),
    "fan-in-tcp": (peer, tag) => (peer.tcpUrl ? fanIn(peer, { ...common, ...params.fanIn }, tag, { native: true }) : null),
    shared: (peer, tag) => (unsupported.shared?.[peer.name] ? null : shared(peer, { ...common, ...params.shared }, tag)),
    "fan-out": (peer, tag) => fanOut(peer, { ...common, ...params.fanOut }, tag),
    // QoS 1 end to end: publishes and subscriptions at QoS 1 (the publishers' PUBACKs, the subscribers' acknowledgements).
    "fan-in-qos1": (peer, tag) => fanIn(peer, { ...common, durationMs: params.qos1DurationMs, ...params.fanIn, window: params.fanIn.publishers * 20, qos: 1 }, `${tag}q1`),
    "fan-out-qos1": (peer, tag) => fanOut(peer, { ...common, ...params.fanOut, qos: 1 }, `${tag}q1`),
    qos1: (peer, tag) => qos1RoundTrip(peer, { ...common, durationMs: params.qos1DurationMs, ...params.qos1 }, tag),
    connect: (peer, tag) => connectStorm(peer, { ...common, ...params.connect }, tag),
    retained: (peer, tag) => (unsupported.retained?.[peer.name] ? null : retainedOnSubscribe(peer, { ...common, ...params.retained }, tag)),
    // The naive peer's do-nothing socket: what a frame costs before any broker's work.
    floor: (peer) => (peer.floorUrl ? frameFloor(peer, { sockets: 10, frames: params.floor.frames, payload: params.payload }) : null),
    // The same socket through wrangler dev's proxy: what local development adds per frame, which the other rows leave out.
    "floor-proxy": (peer) => (peer.proxyFloorUrl && peer.proxyFloorUrl !== peer.floorUrl ? frameFloor({ ...peer, floorUrl: peer.proxyFloorUrl }, { sockets: 10, frames: params.floor.frames, payload: params.payload }) : null),
    bystander: (peer, tag) => (peer.limited ? bystander(peer.limited, { ...common, ...params.bystander }, tag, peer.limited.auth("flood")) : null),
  };
  const runs = {};
  for (let round = 0; round < params.rounds; round++) {
    for (const scenario of scenarios) {
      const fn = table[scenario];
      if (!fn) continue;
      // Interleave: every peer runs this scenario before the next one, in a rotating order.
      const order = peers.map((_, i) => peers[(i + round) % peers.length]);
      for (const peer of order) {
        const r = await fn(peer, `r${round}`);
        if (r === null) continue; // not applicable to this peer
        ((runs[scenario] ??= {})[peer.name] ??= []).push(r);
        log(`round ${round + 1}/${params.rounds} ${scenario.padEnd(8)} ${peer.name.padEnd(9)} ${headline(scenario, r)}`);
      }
    }
  }

  let cost = null;
  const broker = peers.find((p) => p.name === "broker");
  if (broker && scenarios.includes("cost")) cost = await costModel(broker, runs.connect?.broker ?? []);
  // Its own brokers (restarted, sharded); the main one idles meanwhile.
  const scaled = wanted.has("broker") && scenarios.includes("scale") ? await scale(params.scale, log, peers.find((p) => p.name === "aedes")) : null;
  const stormed = wanted.has("broker") && scenarios.includes("storm") ? await storm(params.storm, log) : null;
  const load1 = loadavg();

  const medians = summarize(runs);
  // Memory: a server's allocator keeps what the first storm took and reuses it in later
  // rounds, so the first round is the one that shows what fresh connections cost.
  for (const [peer, list] of Object.entries(runs.connect ?? {})) medians.connect[peer].rssKiBPerConnectionFirstRound = list[0]?.rssKiBPerConnection;
  const result = {
    date: new Date().toISOString(),
    durationS: (Date.now() - started) / 1000,
    mode: q ? "quick" : "full",
    machine: { cpus: cpus().length, cpuModel: cpus()[0]?.model ?? "", memGiB: Math.round(totalmem() / 2 ** 30), node: process.version, loadavgBefore: load0, loadavgAfter: load1 },
    source: gitSource(),
    params,
    peers: peers.map((p) => ({ name: p.name, label: p.label })),
    medians,
    unsupported,
    ratios: ratios(medians),
    cost,
    scale: scaled,
    storm: stormed,
    runs,
  };
  const md = markdown(result);
  mkdirSync(flags.out, { recursive: true });
  const stamp = result.date.replace(/[:.]/g, "-");
  writeFileSync(join(flags.out, `bench-${stamp}.json`), JSON.stringify(result, null, 2) + "\n");
  writeFileSync(join(flags.out, `bench-${stamp}.md`), md);
  writeFileSync(join(flags.out, "latest.json"), JSON.stringify(result, null, 2) + "\n");
  writeFileSync(join(flags.out, "latest.md"), md);
  console.log(`\n${md}`);
  log(`wrote ${join(flags.out, `bench-${stamp}.{json,md}`)} (and latest.*)`);
}

/** The commit the broker was built from, and whether the working tree had other changes. */
function gitSource() {
  const git = (...args) => spawnSync("git", args, { cwd: join(HERE, ".."), encoding: "utf8" }).stdout?.trim() ?? "";
  const changed = git("status", "--porcelain", "--", "src", "wrangler.toml").split("\n").filter(Boolean).length;
  return { commit: git("rev-parse", "--short", "HEAD"), uncommittedSrcFiles: changed };
}

function headline(scenario, r) {
  const inc = r.complete === false ? `  INCOMPLETE ${r.delivered}/${r.expected}${r.lost ? `: ${r.lost}` : ""}` : "";
  const cpu = `server CPU ${r.serverCpuMs.toFixed(0)} ms, generator ${r.generatorCpuPct.toFixed(0)}% of a core`;
  switch (scenario) {
    case "fan-in":
    case "fan-out":
    case "fan-in-qos1":
    case "fan-out-qos1":
      return `${r.deliveriesPerSec.toFixed(0)} deliveries/s, ${cpu}${inc}`;
    case "fan-in-tcp":
      return `${r.deliveriesPerSec.toFixed(0)} deliveries/s, ${cpu}${r.bridgeCpuMs !== undefined ? `, bridge CPU ${r.bridgeCpuMs.toFixed(0)} ms` : ""}${inc}`;
    case "shared":
      return `${r.deliveriesPerSec.toFixed(0)} deliveries/s over ${r.members} members (${r.perMemberMin}–${r.perMemberMax} each), ${r.duplicates} duplicates, ${r.missing} missing, ${cpu}${inc}`;
    case "qos1":
      return `PUBACK p50 ${r.pubackP50Ms.toFixed(2)} ms, delivery p50 ${r.deliveryP50Ms.toFixed(2)} ms, ${cpu}${inc}`;
    case "connect":
      return `${r.connectsPerSec.toFixed(0)} connects/s, CONNACK p99 ${r.connackP99Ms.toFixed(1)} ms, ${(r.rssKiBPerConnection).toFixed(0)} KiB/conn${r.failures ? `, ${r.failures} failed (${r.firstError})` : ""}`;
    case "floor":
    case "floor-proxy":
      return `${r.framesPerSec.toFixed(0)} frames/s, ${r.serverCpuUsPerFrame.toFixed(1)} µs server CPU per frame`;
    case "bystander":
      return `round trip p99 ${r.quietP99Ms.toFixed(2)} ms quiet, ${r.floodP99Ms.toFixed(2)} ms flooded (×${r.p99Ratio.toFixed(1)}; p50 ${r.quietP50Ms.toFixed(2)} → ${r.floodP50Ms.toFixed(2)} ms) over ${r.quietRoundTrips}/${r.floodRoundTrips} round trips; flood ${r.floodPublishesPerSec.toFixed(0)} publishes/s, ${r.frameFloodsPerSec.toFixed(1)} frame floods/s (${r.frameFloodsClosed}/${r.frameFloods} closed), ${r.floodersClosed} flooders closed, server ${r.serverCpuPctQuiet.toFixed(0)}% → ${r.serverCpuPctFlood.toFixed(0)}% of a core${inc}`;
    case "retained":
      return `${r.retainedPerSec.toFixed(0)} retained/s over ${r.cycles} subscribes, all ${r.expected / Math.max(1, r.cycles)} in ${r.allRetainedP50Ms.toFixed(1)} ms (p50), ${cpu}${inc}`;
    default:
      return "";
  }
}

/** The broker's billable units per message and per idle connection-day, from its counters. */
async function costModel(broker, connectRuns) {
  const prices = JSON.parse(readFileSync(join(HERE, "prices.json"), "utf8"));
  const messages = [];
  const cases = [
    { qos: 0, mode: "paced" },
    { qos: 0, mode: "burst" },
    { qos: 1, mode: "paced" },
    { qos: 1, mode: "burst" },
    { qos: 1, mode: "paced", persistent: true },
    // 3 × MAX_INFLIGHT messages at once, the subscriber's acks held until all are stored: two thirds wait for its window (each should be written once).
    { qos: 1, mode: "burst", persistent: true, window: 3 * (defaults.MAX_INFLIGHT || 100), count: 3 * (defaults.MAX_INFLIGHT || 100), holdAcks: true },
    { qos: 0, mode: "paced", subscribers: params.cost.fanOut },
    { qos: 1, mode: "paced", subscribers: params.cost.fanOut },
  ];
  for (const { qos, mode, persistent = false, subscribers = 1, window = params.cost.window, holdAcks = false, ...rest } of cases) {
    const tag = `${qos}${mode}${persistent ? "p" : ""}${subscribers > 1 ? `x${subscribers}` : ""}`;
    const count = rest.count ?? (subscribers > 1 ? Math.max(10, Math.round(params.cost.messages / 5)) : params.cost.messages);
    const r = await costMessages(broker, { qos, mode, persistent, subscribers, holdAcks, messages: count, window, payload: params.payload, timeoutMs: params.timeoutMs }, tag);
    // Per message published (for 1 → N, every unit of its N deliveries).
    const units = unitsPer(r.counters, r.published);
    const cpuMsPerMessage = r.serverCpuMs / r.published;
    messages.push({ qos, mode, persistent, subscribers, window, holdAcks, messages: r.published, counters: r.counters, unitsPerMessage: units, serverCpuMsPerMessage: cpuMsPerMessage, dollarsPerMessage: doDollars(units, cpuMsPerMessage, prices) });
    log(`cost QoS ${qos} ${mode}${persistent ? " persistent" : ""} 1 → ${subscribers}: ${units.doRequests.toFixed(2)} DO requests, ${units.wsIn.toFixed(2)} WS messages in, ${units.rowsWritten.toFixed(2)} rows written per message`);
  }
  const idle = [];
  // Each KEEPALIVE_CHECK_SECONDS ratio, then the exact setting with the shared keep-alive clock.
  const settings = [...params.cost.idleChecks.map((ratio) => ({ ratio, clock: false })), ...(params.cost.idleClock ? [{ ratio: 0, clock: true }] : [])];
  for (const { ratio, clock } of settings) {
    const checkSeconds = ratio * params.cost.idleKeepalive;
    const name = clock ? "KEEPALIVE_CLOCK shared" : `KEEPALIVE_CLOCK alarm, KEEPALIVE_CHECK_SECONDS ${checkSeconds}`;
    // The clock (the default) runs on the main broker; the connection's own alarm, exact or coarser
    // (KEEPALIVE_CHECK_SECONDS > 0 selects it), needs a broker with its own vars.
    const vars = clock ? null : ratio > 0 ? { KEEPALIVE_CHECK_SECONDS: String(checkSeconds) } : { KEEPALIVE_CLOCK: "alarm" };
    const target = vars ? await startBroker({ vars }) : broker;
    try {
      // At least two grains counted, so the coarse alarm's runs are sampled over whole grains.
      const periods = Math.max(params.cost.idlePeriods, 2 * ratio);
      const r = await costIdle(target, { connections: params.cost.idleConnections, keepalive: params.cost.idleKeepalive, periods }, clock ? "clock" : `c${ratio}`);
      if (r.counters && r.pings > 0) {
        const perPing = unitsPer(r.counters, r.pings);
        const perDay = Object.fromEntries(Object.entries(perPing).map(([k, v]) => [k, v * 1440]));
        const cpuMsPerDay = (r.serverCpuMs / r.pings) * 1440;
        idle.push({ ...(clock ? { clock: true } : {}), checkRatio: ratio, checkSeconds, pings: r.pings, keepalive: r.keepalive, connections: r.connections, counters: r.counters, unitsPerPing: perPing, unitsPerDay: perDay, serverCpuMsPerPing: r.serverCpuMs / r.pings, dollarsPerDay: doDollars(perDay, cpuMsPerDay, prices) });
        log(`cost idle (${name}): per PINGREQ ${perPing.wsIn.toFixed(2)} WS messages in, ${perPing.doRpc.toFixed(2)} RPCs, ${perPing.alarmRun.toFixed(2)} alarms, ${perPing.rowsWritten.toFixed(2)} rows written`);
      }
    } finally {
      if (target !== broker) await target.stop();
    }
  }
  // Connects: from the connect storm's counters (CONNECT → CONNACK, clean session), median round by CPU.
  let connect = null;
  const withCounters = connectRuns.filter((c) => c.counters && c.delivered > 0).sort((a, b) => a.serverCpuMsPerConnect - b.serverCpuMsPerConnect);
  const mid = withCounters[Math.floor(withCounters.length / 2)];
  if (mid) {
    const units = unitsPer(mid.counters, mid.delivered);
    connect = { connections: mid.delivered, counters: mid.counters, unitsPerConnect: units, serverCpuMsPerConnect: mid.serverCpuMsPerConnect, dollarsPerConnect: doDollars(units, mid.serverCpuMsPerConnect, prices) };
  }
  return { prices, messages, idle, connect };
}

/** Footnotes for the "n/a" cells: what the probe saw. */
function unsupportedNotes(unsupported) {
  const notes = [];
  for (const [scenario, byPeer] of Object.entries(unsupported ?? {})) {
    for (const [peer, why] of Object.entries(byPeer)) {
      notes.push(scenario === "shared" ? `n/a: ${peer} does not implement shared subscriptions (${scenario} probe: ${why}); not measured.` : `n/a: ${peer} ${why} (${scenario}); not measured.`);
    }
  }
  return notes.length ? ["", ...notes] : [];
}

function markdown(r) {
  const peerList = r.peers.map((p) => `${p.name} = ${p.label}`).join("; ");
  const p = r.params;
  const parts = [
    `## Bench ${r.mode} run, ${r.date.slice(0, 16).replace("T", " ")} UTC`,
    "",
    `${r.machine.cpus} × ${r.machine.cpuModel}, ${r.machine.memGiB} GiB, Node ${r.machine.node}; load average ${r.machine.loadavgBefore.map((x) => x.toFixed(2)).join(" ")} before, ${r.machine.loadavgAfter.map((x) => x.toFixed(2)).join(" ")} after. ` +
      `Broker built from ${r.source.commit}${r.source.uncommittedSrcFiles ? ` plus ${r.source.uncommittedSrcFiles} uncommitted file(s) under src/` : ""}. ` +
      `Medians of ${p.rounds} interleaved rounds, ${r.durationS.toFixed(0)} s in all. Peers: ${peerList}. ` +
      `Server CPU and RSS: the whole process tree of each server, from /proc. Ratios are broker ÷ peer (↑: higher is better, ↓: lower is better).`,
    "",
    `Parameters: each timed run lasts ${p.durationMs / 1000} s (the QoS 1 fan-in and round trip ${p.qos1DurationMs / 1000} s; at most ${p.maxMessages.toLocaleString("en-US")} messages). Fan-in: ${p.fanIn.publishers} publishers, QoS 0, each to its own topic → 1 \`bench/in/#\` subscriber, ` +
      `at most ${p.fanIn.window} deliveries outstanding; fan-in over TCP: the same, every client on plain TCP (the broker through the bridge, \`bridge/cli.mjs\`, its CPU measured apart; aedes and mosquitto on their own TCP listeners); ` +
      `fan-out: 1 publisher, QoS 0 → ${p.fanOut.subscribers} subscribers, at most ${p.fanOut.window} deliveries outstanding; ` +
      `shared: 1 publisher, QoS ${p.shared.qos} → a \`$share/bench/bench/shared\` group of ${p.shared.members} members, at most ${p.shared.window} deliveries outstanding, each message checked to arrive exactly once across the group; ` +
      `QoS 1 round trip: ${p.qos1.clients} client(s) publishing QoS 1 to their own subscription, one message at a time; connect storm: ${p.connect.connections} connections, ${p.connect.concurrency} at a time, keep alive 60 s, then held idle ${p.connect.holdMs / 1000} s; ` +
      `retained: ${p.retained.topics} retained topics, a \`bench/ret/#\` subscription (QoS ${p.retained.subQos}) repeated; ` +
      `bystander (broker only, on a second broker with the default rate limits): one client's QoS 1 round trips (publish → PUBACK and its own delivery), ${(1000 / p.bystander.intervalMs).toFixed(0)}/s open loop, for ${p.bystander.durationMs / 1000} s quiet, then ${p.bystander.durationMs / 1000} s while another account floods: ` +
      `${p.bystander.flooders} connections publishing QoS 0 (a burst of ${p.bystander.floodBurst}, then ${p.bystander.floodRate}/s each), one subscriber of the flood, ${p.bystander.frameFlooders} loops each connecting and sending one frame of ${p.bystander.frameFloodPackets} PINGREQs; payload ${p.payload} bytes.`,
    "",
    performanceTable(r.medians, r.peers, r.unsupported),
    ...unsupportedNotes(r.unsupported),
    "",
    "The load generator's own CPU (to show it was not the bottleneck):",
    "",
    generatorTable(r.medians, r.peers),
  ];
  if (r.storm) {
    parts.push("", `### Connect storm after a restart (${r.storm.params.connections} connections, ${r.storm.params.concurrency} at a time, persistent sessions)`, "", stormTable(r.storm));
  }
  if (r.scale) {
    parts.push(
      "",
      `### Scale (one large account; ${r.scale.params.load.devices} devices at ${r.scale.params.load.ratePerDevice}/s each for the shard rows)`,
      "",
      scaleTable(r.scale),
    );
  }
  if (r.cost) {
    parts.push(
      "",
      `### Cost model (broker counters, prices read ${r.cost.prices.read})`,
      "",
      `Counted by the broker itself (BENCH_COUNTERS=1) over ${p.cost.messages} messages per row. Dollars: Cloudflare Durable Objects list prices above the included amounts ` +
        "(requests $0.15/M with incoming WebSocket messages at 20:1, rows written $1.00/M, rows read $0.001/M); the duration estimate prices the broker's local CPU time per message as " +
        "128 MB × seconds at $12.50/M GB-s (Cloudflare bills wall-clock time while an object is active, which is at least that). AWS IoT Core: $1.00/M messages, counting the inbound and " +
        "outbound PUBLISH (and at QoS 1 the subscriber's PUBACK), $0.08/M connection-minutes.",
      "",
      costTable(r.cost, r.cost.prices),
      "",
      idleTable(r.cost.idle, r.cost.prices),
      "",
      connectTable(r.cost.connect, r.cost.prices),
    );
  }
  return parts.join("\n") + "\n";
}

try {
  await main();
} catch (err) {
  console.error(`bench failed: ${err instanceof Error ? err.stack : err}`);
  for (const peer of peers) {
    if (peer.output) console.error(`--- last output of ${peer.name}:\n${peer.output().split("\n").slice(-30).join("\n")}`);
    // The bridge logs one line per connection with why it ended (a refused upgrade, the broker's close code).
    if (peer.bridge?.output) console.error(`--- last output of ${peer.name}'s bridge:\n${peer.bridge.output().split("\n").slice(-10).join("\n")}`);
  }
  process.exitCode = 1;
} finally {
  for (const peer of peers) {
    await peer.bridge?.stop().catch(() => {});
    await peer.limited?.stop().catch(() => {});
    await peer.stop().catch(() => {});
  }
  stopAllNow();
}
