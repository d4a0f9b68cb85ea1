// The `storm` scenario (bench/README.md): a fleet reconnecting at once after an outage or a
// deploy. N connections (500 quick / 5,000 full), C connecting at a time (50), held, then the
// runtime killed and restarted on that state (the first storm's connection objects find their
// sockets gone), and the fleet again at once. Per storm: failures by cause (the HTTP status of
// a refused upgrade, the CONNACK code, a close before CONNACK, a timeout), connects/s, RSS per
// held connection, and the memory left after the connections close.
import { MqttClient } from "./client.mjs";
import { startBroker } from "./servers.mjs";
import { treeUsage } from "./proc.mjs";

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** What a failed connect says, reduced to its cause. */
function cause(err) {
  const m = err instanceof Error ? err.message : String(err);
  const http = /Unexpected server response: (\d+)/.exec(m);
  if (http) return `HTTP ${http[1]}`;
  const connack = /CONNACK (\d+)/.exec(m);
  if (connack) return `CONNACK ${connack[1]}`;
  if (/socket closed/.test(m)) return "closed before CONNACK";
  if (/no CONNACK within/.test(m)) return "no CONNACK (timeout)";
  return m.replace(/^[^:]*: /, "").slice(0, 60);
}

async function wave(url, ids, concurrency) {
  const clients = [];
  const causes = {};
  let next = 0;
  const t0 = performance.now();
  const worker = async () => {
    while (next < ids.length) {
      const id = ids[next++];
      try {
        clients.push(await MqttClient.connect(url, { clientId: id, clean: false, keepalive: 60, timeoutMs: 30_000 }));
      } catch (err) {
        const c = cause(err);
        causes[c] = (causes[c] ?? 0) + 1;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, ids.length) }, worker));
  const ms = performance.now() - t0;
  return { clients, causes, failures: ids.length - clients.length, connectsPerSec: (clients.length / ms) * 1000 };
}

export async function storm(p, log) {
  const ids = Array.from({ length: p.connections }, (_, i) => `fleet-${i}`);
  const runs = [];
  let broker = await startBroker();
  try {
    for (const label of ["first storm", "after a restart on its state"]) {
      await sleep(2000);
      const before = treeUsage(broker.pid).rssBytes;
      // Past the dev proxy when it can be found: the proxy holds two sockets per connection and
      // stops a storm of thousands at the open-file limit (`via` says which way each storm went).
      const url = (p.viaProxy ? null : broker.directWsUrl) ?? broker.proxyWsUrl;
      const w = await wave(url, ids, p.concurrency);
      await sleep(p.holdMs);
      const held = treeUsage(broker.pid).rssBytes;
      const run = {
        label,
        via: url === broker.proxyWsUrl ? "wrangler dev proxy" : "runtime directly",
        connections: p.connections,
        connected: w.clients.length,
        failures: w.failures,
        causes: w.causes,
        connectsPerSec: w.connectsPerSec,
        rssKiBPerConnection: (held - before) / 1024 / Math.max(1, w.clients.length),
      };
      if (label === "first storm") {
        // Killed with the fleet still connected: their objects wake on the restarted runtime.
        for (const c of w.clients) c.kill();
        const persistDir = broker.persistDir;
        await broker.stop({ keepState: true });
        broker = await startBroker({ persistDir });
      } else {
        for (let i = 0; i < w.clients.length; i += 100) await Promise.all(w.clients.slice(i, i + 100).map((c) => c.end()));
        await sleep(p.holdMs);
        run.rssAfterCloseKiBPerConnection = (treeUsage(broker.pid).rssBytes - before) / 1024 / Math.max(1, w.clients.length);
      }
      runs.push(run);
      log(`storm: ${label} (${run.via}): ${run.connected}/${run.connections} connected at ${run.connectsPerSec.toFixed(0)}/s, ${run.failures} failed${run.failures ? ` (${Object.entries(run.causes).map(([k, v]) => `${v} ${k}`).join(", ")})` : ""}, ${run.rssKiBPerConnection.toFixed(0)} KiB per held connection${run.rssAfterCloseKiBPerConnection !== undefined ? `, ${run.rssAfterCloseKiBPerConnection.toFixed(0)} KiB each left after they closed` : ""}`);
    }
  } finally {
    await broker.stop();
  }
  return { params: p, runs };
}

export function stormTable(r) {
  const lines = ["| storm | clients connect to | connected | failures (causes) | connects/s | RSS KiB per held connection | KiB each left after close |", "| --- | --- | ---: | --- | ---: | ---: | ---: |"];
  for (const run of r.runs) {
    const causes = run.failures ? ` (${Object.entries(run.causes).map(([k, v]) => `${v} ${k}`).join(", ")})` : "";
    lines.push(`| ${run.label} | ${run.via ?? "wrangler dev proxy"} | ${run.connected}/${run.connections} | ${run.failures}${causes} | ${run.connectsPerSec.toFixed(0)} | ${run.rssKiBPerConnection.toFixed(0)} | ${run.rssAfterCloseKiBPerConnection?.toFixed(0) ?? "–"} |`);
  }
  return lines.join("\n");
}
