#!/usr/bin/env node
// `npm run bridge -- …` / `npx edge-mqtt-bridge …`: see `--help` and docs/bridge.md.
import { readFileSync } from "node:fs";
import { Bridge, jsonLog } from "./bridge.mjs";
import { ConfigError, HELP, parseConfig } from "./config.mjs";

/** @type {import("./config.mjs").CliConfig} */
let config;
try {
  config = parseConfig(process.argv.slice(2), process.env);
} catch (err) {
  if (!(err instanceof ConfigError)) throw err;
  process.stderr.write(`edge-mqtt-bridge: ${err.message}\n(see --help)\n`);
  process.exit(2);
}
if (config.help) {
  process.stdout.write(HELP);
  process.exit(0);
}
const cfg = config;

/** The token from --token-file (trimmed), else BRIDGE_TOKEN. */
function readToken() {
  if (cfg.tokenFile === undefined) return cfg.token;
  const t = readFileSync(cfg.tokenFile, "utf8").trim();
  if (t === "") throw new Error(`token file ${cfg.tokenFile} is empty`);
  return t;
}

function readTls() {
  if (cfg.tlsCert === undefined || cfg.tlsKey === undefined) return undefined;
  return { cert: readFileSync(cfg.tlsCert), key: readFileSync(cfg.tlsKey) };
}

let bridge;
try {
  bridge = new Bridge({
    to: cfg.to,
    token: readToken(),
    tls: readTls(),
    maxConnections: cfg.maxConnections,
    idleConnectTimeoutMs: cfg.idleConnectTimeoutMs,
    maxPacketBytes: cfg.maxPacketBytes,
  });
  const addr = await bridge.listen(cfg.port, cfg.host);
  jsonLog({
    event: "listening",
    address: addr.address,
    port: addr.port,
    tls: cfg.tlsCert !== undefined,
    to: cfg.to,
    token: bridge.token !== undefined,
    maxConnections: cfg.maxConnections,
    idleConnectTimeoutMs: cfg.idleConnectTimeoutMs,
    maxPacketBytes: cfg.maxPacketBytes,
  });
} catch (err) {
  process.stderr.write(`edge-mqtt-bridge: ${/** @type {Error} */ (err).message}\n`);
  process.exit(1);
}
const running = bridge;

process.on("SIGHUP", () => {
  /** @type {string[]} */
  const reloaded = [];
  try {
    const creds = readTls();
    if (creds) {
      running.setTls(creds);
      reloaded.push("tls");
    }
    if (cfg.tokenFile !== undefined) {
      running.setToken(readToken());
      reloaded.push("token");
    }
    jsonLog({ event: "reload", reloaded });
  } catch (err) {
    // keep serving with what was loaded before
    jsonLog({ event: "reload_failed", error: /** @type {Error} */ (err).message, reloaded });
  }
});

let stopping = false;
/** @param {NodeJS.Signals} signal */
function stop(signal) {
  if (stopping) {
    jsonLog({ event: "shutdown", signal, forced: true, open: running.connections.size });
    process.exit(1);
  }
  stopping = true;
  const open = running.connections.size;
  jsonLog({ event: "shutdown", signal, open });
  running.close(cfg.shutdownGraceMs).then(
    () => {
      jsonLog({ event: "stopped", stats: running.stats });
      process.exit(0);
    },
    (err) => {
      jsonLog({ event: "stopped", error: err.message });
      process.exit(1);
    },
  );
}
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
