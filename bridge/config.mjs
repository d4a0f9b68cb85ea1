// Command line and environment of the bridge. Every flag has an environment variable (for
// containers); a flag given on the command line wins over its variable.
import { parseArgs } from "node:util";
import { DEFAULTS } from "./bridge.mjs";

export const HELP = `edge-mqtt-bridge: native MQTT over TCP or TLS in, MQTT over WebSocket out

Usage:
  npm run bridge -- --to wss://BROKER/mqtt [options]
  npx edge-mqtt-bridge --to wss://BROKER/mqtt [options]

Options (environment variable in brackets):
  --listen HOST:PORT          where devices connect [BRIDGE_LISTEN]
                              (default 0.0.0.0:1883, or 0.0.0.0:8883 with TLS; [::]:PORT for IPv6)
  --to URL                    the broker's WebSocket endpoint, ws:// or wss://…/mqtt [BRIDGE_TO] (required)
  --tls-cert FILE             PEM certificate chain: terminate TLS (with --tls-key) [BRIDGE_TLS_CERT]
  --tls-key FILE              PEM private key [BRIDGE_TLS_KEY]
                              both files are read again on SIGHUP (for certificate renewal)
  --token-file FILE           file holding the broker's BRIDGE_TOKEN secret, sent as x-bridge-token
                              with the device address in x-bridge-client-addr [BRIDGE_TOKEN_FILE]
                              (or the token itself in BRIDGE_TOKEN; re-read on SIGHUP)
  --max-connections N         device connections at once; more are refused (default ${DEFAULTS.maxConnections}) [BRIDGE_MAX_CONNECTIONS]
  --idle-connect-timeout S    close a connection that sends no CONNECT within S seconds;
                              0 = never (default ${DEFAULTS.idleConnectTimeoutMs / 1000}) [BRIDGE_IDLE_CONNECT_TIMEOUT]
  --max-packet-bytes N        largest MQTT packet from a device; a larger one closes the connection
                              before it is buffered (default ${DEFAULTS.maxPacketBytes}) [BRIDGE_MAX_PACKET_BYTES]
  --shutdown-grace S          on SIGTERM, wait up to S seconds for connections to close (default ${DEFAULTS.shutdownGraceMs / 1000}) [BRIDGE_SHUTDOWN_GRACE]
  -h, --help                  this text

One WebSocket (subprotocol mqtt) per device connection, bytes unchanged both ways. Logs are
JSON lines on stdout: one per connection when it closes (bytes each way, reason).
Signals: SIGTERM/SIGINT stop accepting and close connections gracefully; SIGHUP reloads the
TLS certificate and key and the token file. Extra CAs for a wss:// broker: NODE_EXTRA_CA_CERTS.
`;

/** flag name → environment variable */
export const ENV_NAMES = Object.freeze({
  listen: "BRIDGE_LISTEN",
  to: "BRIDGE_TO",
  "tls-cert": "BRIDGE_TLS_CERT",
  "tls-key": "BRIDGE_TLS_KEY",
  "token-file": "BRIDGE_TOKEN_FILE",
  "max-connections": "BRIDGE_MAX_CONNECTIONS",
  "idle-connect-timeout": "BRIDGE_IDLE_CONNECT_TIMEOUT",
  "max-packet-bytes": "BRIDGE_MAX_PACKET_BYTES",
  "shutdown-grace": "BRIDGE_SHUTDOWN_GRACE",
});

/**
 * @typedef {object} CliConfig
 * @property {boolean} help
 * @property {string} host
 * @property {number} port
 * @property {string} to
 * @property {string} [tlsCert]
 * @property {string} [tlsKey]
 * @property {string} [tokenFile]
 * @property {string} [token]         from BRIDGE_TOKEN (the file, if given, wins)
 * @property {number} maxConnections
 * @property {number} idleConnectTimeoutMs
 * @property {number} maxPacketBytes
 * @property {number} shutdownGraceMs
 */

/** A configuration mistake: print the message (and point to --help), exit 2. */
export class ConfigError extends Error {}

/**
 * `HOST:PORT`, `[V6]:PORT`, `:PORT` or `PORT`.
 * @param {string} s
 * @returns {{ host: string, port: number }}
 */
export function parseListen(s) {
  const m = /^(?:\[([^\]]+)\]|([^:]*))?:?(\d+)$/.exec(s.trim());
  const port = m ? Number(m[3]) : NaN;
  if (!m || !Number.isInteger(port) || port < 0 || port > 65535) throw new ConfigError(`--listen must be HOST:PORT, got "${s}"`);
  const host = m[1] ?? (m[2] || "0.0.0.0");
  return { host, port };
}

/**
 * @param {string} name
 * @param {string} value
 * @param {{ min: number, integer?: boolean }} rule
 */
function number(name, value, rule) {
  const n = Number(value);
  if (value.trim() === "" || !Number.isFinite(n) || n < rule.min || (rule.integer && !Number.isInteger(n))) {
    throw new ConfigError(`--${name} must be ${rule.integer ? "an integer" : "a number"} >= ${rule.min}, got "${value}"`);
  }
  return n;
}

/**
 * Reads the configuration from arguments and environment (flags win).
 * @param {string[]} argv arguments after the script name
 * @param {Record<string, string | undefined>} env
 * @returns {CliConfig}
 */
export function parseConfig(argv, env) {
  /** @type {ReturnType<typeof parseArgs>} */
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: {
        help: { type: "boolean", short: "h" },
        listen: { type: "string" },
        to: { type: "string" },
        "tls-cert": { type: "string" },
        "tls-key": { type: "string" },
        "token-file": { type: "string" },
        "max-connections": { type: "string" },
        "idle-connect-timeout": { type: "string" },
        "max-packet-bytes": { type: "string" },
        "shutdown-grace": { type: "string" },
      },
    });
  } catch (err) {
    throw new ConfigError(/** @type {Error} */ (err).message);
  }
  const values = /** @type {Record<string, string | boolean | undefined>} */ (parsed.values);
  /** @param {keyof typeof ENV_NAMES} name */
  const get = (name) => {
    const v = values[name];
    if (typeof v === "string") return v;
    const e = env[ENV_NAMES[name]];
    return e === undefined || e === "" ? undefined : e;
  };
  const help = values.help === true;
  const tlsCert = get("tls-cert");
  const tlsKey = get("tls-key");
  if ((tlsCert === undefined) !== (tlsKey === undefined)) throw new ConfigError("--tls-cert and --tls-key go together");
  const { host, port } = parseListen(get("listen") ?? (tlsCert ? "0.0.0.0:8883" : "0.0.0.0:1883"));
  const to = get("to") ?? "";
  if (!help) {
    if (to === "") throw new ConfigError("--to (or BRIDGE_TO) is required, e.g. --to wss://broker.example.com/mqtt");
    let url;
    try {
      url = new URL(to);
    } catch {
      throw new ConfigError(`--to is not a URL: "${to}"`);
    }
    if (url.protocol !== "ws:" && url.protocol !== "wss:") throw new ConfigError(`--to must be ws:// or wss://, got "${to}"`);
  }
  const maxConnections = get("max-connections");
  const idle = get("idle-connect-timeout");
  const maxPacket = get("max-packet-bytes");
  const grace = get("shutdown-grace");
  const token = env.BRIDGE_TOKEN === "" ? undefined : env.BRIDGE_TOKEN;
  return {
    help,
    host,
    port,
    to,
    tlsCert,
    tlsKey,
    tokenFile: get("token-file"),
    token,
    maxConnections: maxConnections === undefined ? DEFAULTS.maxConnections : number("max-connections", maxConnections, { min: 1, integer: true }),
    idleConnectTimeoutMs: idle === undefined ? DEFAULTS.idleConnectTimeoutMs : Math.round(number("idle-connect-timeout", idle, { min: 0 }) * 1000),
    maxPacketBytes: maxPacket === undefined ? DEFAULTS.maxPacketBytes : number("max-packet-bytes", maxPacket, { min: 2, integer: true }),
    shutdownGraceMs: grace === undefined ? DEFAULTS.shutdownGraceMs : Math.round(number("shutdown-grace", grace, { min: 0 }) * 1000),
  };
}
