// Medians, ratios, the cost model and the Markdown tables.

export function median(values) {
  const v = values.filter((x) => typeof x === "number" && Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return NaN;
  const mid = Math.floor(v.length / 2);
  return v.length % 2 === 1 ? v[mid] : (v[mid - 1] + v[mid]) / 2;
}

/** Rows of the main table: which result field, its label, unit, and whether higher is better (null: a description of the load, no arrow). */
export const METRICS = {
  "fan-in": [
    ["deliveriesPerSec", "deliveries/s", true],
    ["serverCpuUsPerDelivery", "server CPU µs/delivery", false],
  ],
  "fan-in-tcp": [
    ["deliveriesPerSec", "deliveries/s", true],
    ["serverCpuUsPerDelivery", "server CPU µs/delivery", false],
    ["bridgeCpuUsPerDelivery", "bridge CPU µs/delivery", false],
    ["serverPlusBridgeCpuUsPerDelivery", "server + bridge CPU µs/delivery", false],
  ],
  "fan-out": [
    ["deliveriesPerSec", "deliveries/s", true],
    ["serverCpuUsPerDelivery", "server CPU µs/delivery", false],
  ],
  "fan-in-qos1": [
    ["deliveriesPerSec", "deliveries/s", true],
    ["serverCpuUsPerDelivery", "server CPU µs/delivery", false],
  ],
  "fan-out-qos1": [
    ["deliveriesPerSec", "deliveries/s", true],
    ["serverCpuUsPerDelivery", "server CPU µs/delivery", false],
  ],
  shared: [
    ["deliveriesPerSec", "deliveries/s", true],
    ["serverCpuUsPerDelivery", "server CPU µs/delivery", false],
  ],
  qos1: [
    ["roundTripsPerSec", "round trips/s", true],
    ["pubackP50Ms", "PUBACK p50 ms", false],
    ["pubackP99Ms", "PUBACK p99 ms", false],
    ["deliveryP50Ms", "delivery p50 ms", false],
    ["deliveryP99Ms", "delivery p99 ms", false],
    ["serverCpuUsPerDelivery", "server CPU µs/round trip", false],
  ],
  connect: [
    ["connectsPerSec", "connects/s", true],
    ["connackP50Ms", "CONNACK p50 ms", false],
    ["connackP99Ms", "CONNACK p99 ms", false],
    ["serverCpuMsPerConnect", "server CPU ms/connect", false],
    ["serverCpuMsPerClose", "server CPU ms/close (DISCONNECT to quiet)", false],
    ["runtimeCpuMsPerConnect", "runtime CPU ms/connect (wrangler dev: workerd alone)", false],
    ["runtimeCpuMsPerClose", "runtime CPU ms/close (wrangler dev: workerd alone)", false],
    ["rssKiBPerConnectionFirstRound", "server RSS KiB/held connection, first round", false],
    ["rssKiBPerConnection", "same, median of all rounds", false],
  ],
  retained: [
    ["retainedPerSec", "retained msgs/s on subscribe", true],
    ["allRetainedP50Ms", "SUBSCRIBE → all retained, p50 ms", false],
    ["serverCpuUsPerDelivery", "server CPU µs/retained msg", false],
  ],
  floor: [
    ["framesPerSec", "incoming frames/s", true],
    ["serverCpuUsPerFrame", "server CPU µs per incoming frame, handler doing nothing", false],
  ],
  "floor-proxy": [
    ["framesPerSec", "incoming frames/s", true],
    ["serverCpuUsPerFrame", "server CPU µs per incoming frame, handler doing nothing", false],
  ],
  bystander: [
    ["quietP50Ms", "bystander QoS 1 round trip p50 ms, quiet", false],
    ["floodP50Ms", "same, another account flooding", false],
    ["p50Ratio", "p50 flooded ÷ quiet", false],
    ["quietP99Ms", "bystander QoS 1 round trip p99 ms, quiet", false],
    ["floodP99Ms", "same, another account flooding", false],
    ["p99Ratio", "p99 flooded ÷ quiet", false],
    ["floodPublishesPerSec", "the flood: publishes/s sent by the other account", null],
    ["floodDeliveriesPerSec", "the flood: deliveries/s to its subscriber", null],
    ["frameFloodsPerSec", "the flood: frame floods/s refused (a new connection each)", null],
    ["serverCpuPctFlood", "server CPU % of a core while flooded", null],
  ],
};

export const SCENARIO_TITLES = {
  "fan-in": "fan-in",
  "fan-in-tcp": "fan-in, native TCP clients",
  "fan-out": "fan-out",
  "fan-in-qos1": "fan-in at QoS 1",
  "fan-out-qos1": "fan-out at QoS 1",
  shared: "shared subscription",
  qos1: "QoS 1 round trip",
  connect: "connect storm",
  retained: "retained on subscribe",
  bystander: "bystander while another account floods",
  floor: "runtime floor: one frame to a hibernatable object",
  "floor-proxy": "the same, through wrangler dev's proxy (local development only)",
};

function fmt(x) {
  if (typeof x !== "number" || !Number.isFinite(x)) return "–";
  const a = Math.abs(x);
  if (a >= 1000) return Math.round(x).toLocaleString("en-US");
  if (a >= 100) return x.toFixed(0);
  if (a >= 10) return x.toFixed(1);
  if (a >= 1) return x.toFixed(2);
  return x.toPrecision(2);
}

function fmtRatio(x) {
  if (typeof x !== "number" || !Number.isFinite(x)) return "–";
  return x >= 10 ? `${x.toFixed(0)}×` : `${x.toFixed(2)}×`;
}

function money(x) {
  if (typeof x !== "number" || !Number.isFinite(x)) return "–";
  if (x === 0) return "$0";
  if (x >= 100) return `$${x.toFixed(0)}`;
  if (x >= 1) return `$${x.toFixed(2)}`;
  return `$${x.toPrecision(2)}`;
}

/** medians[scenario][peer][field] over the rounds; runs[scenario][peer] = [result, ...]. */
export function summarize(runs) {
  const medians = {};
  for (const [scenario, byPeer] of Object.entries(runs)) {
    medians[scenario] = {};
    for (const [peer, results] of Object.entries(byPeer)) {
      const m = {};
      const fields = new Set(results.flatMap((r) => Object.keys(r)));
      for (const f of fields) {
        const vals = results.map((r) => r[f]);
        if (vals.every((v) => typeof v === "number")) m[f] = median(vals);
      }
      m.rounds = results.length;
      m.incomplete = results.filter((r) => r.complete === false).length;
      m.generatorCpuPct = median(results.map((r) => r.generatorCpuPct));
      medians[scenario][peer] = m;
    }
  }
  return medians;
}

/** ratios[scenario][peer][field] = broker ÷ peer, for every peer other than the broker. */
export function ratios(medians) {
  const out = {};
  for (const [scenario, byPeer] of Object.entries(medians)) {
    const broker = byPeer.broker;
    if (!broker) continue;
    out[scenario] = {};
    for (const [peer, m] of Object.entries(byPeer)) {
      if (peer === "broker") continue;
      out[scenario][peer] = {};
      for (const [field] of METRICS[scenario] ?? []) out[scenario][peer][field] = broker[field] / m[field];
    }
  }
  return out;
}

export function performanceTable(medians, peers, unsupported = {}) {
  const others = peers.filter((p) => p.name !== "broker");
  const head = ["scenario", "metric", ...peers.map((p) => p.name), ...others.map((p) => `broker/${p.name}`)];
  const lines = [`| ${head.join(" | ")} |`, `|${head.map((_, i) => (i < 2 ? " --- " : " ---: ")).join("|")}|`];
  for (const [scenario, rows] of Object.entries(METRICS)) {
    const byPeer = medians[scenario];
    if (!byPeer) continue;
    const na = unsupported[scenario] ?? {};
    rows.forEach(([field, label, higherBetter], i) => {
      const cells = [i === 0 ? SCENARIO_TITLES[scenario] : "", `${label}${higherBetter === null ? "" : higherBetter ? " ↑" : " ↓"}`];
      for (const p of peers) {
        const m = byPeer[p.name];
        const mark = m && m.incomplete > 0 ? ` (${m.incomplete}/${m.rounds} incomplete)` : "";
        cells.push(na[p.name] ? "n/a" : m ? `${fmt(m[field])}${i === 0 ? mark : ""}` : "–");
      }
      for (const p of others) {
        const b = byPeer.broker?.[field];
        const o = byPeer[p.name]?.[field];
        cells.push(na[p.name] ? "n/a" : b !== undefined && o !== undefined ? fmtRatio(b / o) : "–");
      }
      lines.push(`| ${cells.join(" | ")} |`);
    });
  }
  return lines.join("\n");
}

export function generatorTable(medians, peers) {
  const head = ["scenario", ...peers.map((p) => `${p.name}: generator CPU % of a core`)];
  const lines = [`| ${head.join(" | ")} |`, `|${head.map((_, i) => (i === 0 ? " --- " : " ---: ")).join("|")}|`];
  for (const scenario of Object.keys(METRICS)) {
    const byPeer = medians[scenario];
    if (!byPeer) continue;
    lines.push(`| ${SCENARIO_TITLES[scenario]} | ${peers.map((p) => fmt(byPeer[p.name]?.generatorCpuPct)).join(" | ")} |`);
  }
  return lines.join("\n");
}

// ---------------------------------------------------------------- cost model

/** Billable units per delivered message (or per PINGREQ) from one counter snapshot. */
export function unitsPer(counters, n) {
  const t = counters.totals;
  const doRequests = t.doRpc + t.doFetch + t.alarmRun;
  return {
    doRpc: t.doRpc / n,
    doFetch: t.doFetch / n,
    alarmRun: t.alarmRun / n,
    doRequests: doRequests / n,
    wsIn: t.wsIn / n,
    billedRequests: (doRequests + t.wsIn / 20) / n,
    rowsWritten: t.rowsWritten / n,
    rowsRead: t.rowsRead / n,
    alarmSet: t.alarmSet / n,
  };
}

/** $ per unit count of the DO side: requests and rows, and a duration estimate from server CPU. */
export function doDollars(units, cpuMsPerUnit, prices) {
  const d = prices.cloudflare.durableObjects;
  const requests = (units.billedRequests * d.requestsPerMillion) / 1e6;
  const rows = (units.rowsWritten * d.rowsWrittenPerMillion + units.rowsRead * d.rowsReadPerMillion) / 1e6;
  const duration = ((cpuMsPerUnit / 1000) * d.durationGbPerObject * d.durationPerMillionGbSeconds) / 1e6;
  return { requests, rows, duration, total: requests + rows + duration };
}

export function costTable(cost, prices) {
  const lines = [
    "| one message published | DO requests (RPC + fetch + alarm) | incoming WS messages | billed DO requests (WS 20:1) | rows written | rows read | DO $ per million messages (requests + rows) | + duration estimate | AWS IoT Core $ per million |",
    "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
  ];
  const aws = prices.awsIotCore;
  for (const c of cost.messages) {
    const u = c.unitsPerMessage;
    const $ = c.dollarsPerMessage;
    const n = c.subscribers ?? 1;
    // AWS meters the inbound PUBLISH once and each outbound PUBLISH (and each subscriber's PUBACK at QoS 1).
    const awsPerM = aws.messagingPerMillion * (1 + n * (aws.messagesPerDelivery[c.qos === 0 ? "qos0" : "qos1"] - 1));
    lines.push(
      `| 1 → ${n}, QoS ${c.qos}, ${c.mode === "paced" ? "one at a time" : `burst (${c.window} in flight)`}${c.persistent ? `, persistent subscriber${n > 1 ? "s" : ""} (clean session = false)` : ""}${c.holdAcks ? ", acks held until all are stored (most wait for the window)" : ""} | ${fmt(u.doRequests)} | ${fmt(u.wsIn)} | ${fmt(u.billedRequests)} | ${fmt(u.rowsWritten)} | ${fmt(u.rowsRead)} | ${money(($.requests + $.rows) * 1e6)} | ${money($.duration * 1e6)} | ${money(awsPerM)} |`,
    );
  }
  return lines.join("\n");
}

export function connectTable(connect, prices) {
  if (!connect) return "";
  const u = connect.unitsPerConnect;
  const $ = connect.dollarsPerConnect;
  const worker = prices.cloudflare.workers.requestsPerMillion;
  return [
    "| one connection, CONNECT → CONNACK (clean session) | DO requests (fetch + RPC) | incoming WS messages | rows written | rows read | alarms set | DO $ per million connects (requests + rows) | + Worker request | + duration estimate |",
    "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    `| measured over ${connect.connections} connects of the connect storm | ${fmt(u.doRequests)} | ${fmt(u.wsIn)} | ${fmt(u.rowsWritten)} | ${fmt(u.rowsRead)} | ${fmt(u.alarmSet)} | ${money(($.requests + $.rows) * 1e6)} | ${money(worker)} | ${money($.duration * 1e6)} |`,
  ].join("\n");
}

export function idleTable(idle, prices) {
  const rows = Array.isArray(idle) ? idle : idle ? [idle] : [];
  if (rows.length === 0) return "";
  const awsDay = (prices.awsIotCore.connectivityPerMillionMinutes * 1440) / 1e6;
  return [
    "| one idle connection-day, keep alive 60 s (1,440 PINGREQs) | DO requests (alarms) | incoming WS messages | billed DO requests | rows written | DO $ per day (requests + rows) | + duration estimate | DO $ per million connection-days | AWS IoT Core $ per million connection-days | ÷ AWS |",
    "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ...rows.map((r) => {
      const u = r.unitsPerDay;
      const $ = r.dollarsPerDay;
      const setting = r.clock
        ? "KEEPALIVE_CLOCK = shared, the default (exact: the account's clock asks each connection at its deadline)"
        : r.checkRatio ? `KEEPALIVE_CHECK_SECONDS = ${r.checkRatio} × keep alive (${r.checkRatio * 60} s at 60 s; ${r.checkSeconds} s here; the connection's alarm)` : "KEEPALIVE_CLOCK = alarm, KEEPALIVE_CHECK_SECONDS = 0 (exact, the connection's alarm)";
      const counted = r.clock ? " (the clock object's own cost apart: its duration, about $0.14 a day per account, and its sweep alarm, one a minute)" : "";
      return `| ${setting}, measured over ${r.pings} PINGREQs at keep alive ${r.keepalive} s${counted} | ${fmt(u.doRequests)} | ${fmt(u.wsIn)} | ${fmt(u.billedRequests)} | ${fmt(u.rowsWritten)} | ${money($.requests + $.rows)} | ${money($.duration)} | ${money($.total * 1e6)} | ${money(awsDay * 1e6)} | ${fmt($.total / awsDay)}× |`;
    }),
  ].join("\n");
}
