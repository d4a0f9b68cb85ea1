#!/usr/bin/env node
// `npm start`: local broker on wrangler dev. Installs nothing; run `npm ci` first.
//   0. checks the vars (wrangler.toml, .dev.vars, `--var NAME:VALUE` arguments) with the
//      Worker's own parser (scripts/config-check.mjs) and refuses to start on a bad one,
//   1. makes sure .dev.vars holds ADMIN_TOKEN, JWT_SECRET and DEVICE_PEPPER (random if new),
//   2. applies the local D1 migrations,
//   3. runs `wrangler dev` on 127.0.0.1:$PORT (default 8787), with the --var arguments, and
//      prints how to connect.
import { spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { checkConfig, parseDevVars, parseVarArgs } from "./config-check.mjs";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const WRANGLER = join(ROOT, "node_modules/.bin/wrangler");
const DEV_VARS = join(ROOT, ".dev.vars");
const PERSIST = ".wrangler/state";
const SECRET_KEYS = ["ADMIN_TOKEN", "JWT_SECRET", "DEVICE_PEPPER"];
const DEV_CREDENTIALS = join(ROOT, PERSIST, "dev-device.json");
const DEV_ACCOUNT = "dev";
const DEV_DEVICE = "dev-device";
const DEV_USER = "dev-user";

if (!existsSync(WRANGLER)) {
  console.error("start: node_modules/.bin/wrangler not found; run `npm ci` first");
  process.exit(2);
}
let varArgs;
try {
  const parsed = parseVarArgs(process.argv.slice(2));
  if (parsed.rest.length > 0) throw new Error(`unknown argument ${parsed.rest[0]} (usage: npm start -- [--var NAME:VALUE]...)`);
  varArgs = parsed.vars;
} catch (err) {
  console.error(`start: ${err.message}`);
  process.exit(2);
}
const configCheck = await checkConfig({ root: ROOT, overrides: varArgs });
for (const w of configCheck.warnings) console.warn(`start: warning: ${w}`);
if (!configCheck.ok) {
  console.error("start: not starting, the config is invalid:");
  for (const p of configCheck.problems) console.error(`  ${p}`);
  process.exit(2);
}
const port = Number(process.env.PORT || 8787);
if (!Number.isInteger(port) || port <= 0 || port > 65535) {
  console.error(`start: PORT must be a TCP port number, got "${process.env.PORT}"`);
  process.exit(2);
}

const quietEnv = {
  ...process.env,
  CLOUDFLARE_CF_FETCH_ENABLED: "false",
  WRANGLER_SEND_METRICS: "false",
  XDG_CONFIG_HOME: join(ROOT, ".wrangler/config"),
};

/** The broker refuses a JWT_SECRET shorter than this (src/auth/jwt.ts, MIN_SECRET_BYTES). */
const MIN_JWT_SECRET_BYTES = 32;

/**
 * Creates .dev.vars, or adds the missing secret keys to it; returns all its values. New
 * secrets are 32 random bytes (43 base64url characters). A JWT_SECRET too short for the
 * broker is replaced, since every token login would be refused with it.
 */
function ensureDevVars() {
  const exists = existsSync(DEV_VARS);
  let text = exists ? readFileSync(DEV_VARS, "utf8") : "";
  const vars = parseDevVars(text);
  if (vars.JWT_SECRET && Buffer.byteLength(vars.JWT_SECRET, "utf8") < MIN_JWT_SECRET_BYTES) {
    console.log(`start: JWT_SECRET in .dev.vars is shorter than ${MIN_JWT_SECRET_BYTES} bytes; replacing it with a random one`);
    text = text.replace(/^\s*JWT_SECRET\s*=.*$\n?/gm, "");
    writeFileSync(DEV_VARS, text, { mode: 0o600 });
    delete vars.JWT_SECRET;
  }
  const missing = SECRET_KEYS.filter((k) => !vars[k]);
  if (missing.length === 0) {
    console.log(`start: using existing .dev.vars (${SECRET_KEYS.join(", ")})`);
    return vars;
  }
  const added = missing.map((k) => {
    vars[k] = randomBytes(32).toString("base64url");
    return `${k}=${vars[k]}`;
  });
  const prefix = text === "" || text.endsWith("\n") ? text : `${text}\n`;
  writeFileSync(DEV_VARS, `${prefix}${added.join("\n")}\n`, { mode: 0o600 });
  console.log(
    exists
      ? `start: added ${missing.join(", ")} to .dev.vars (random values)`
      : `start: created .dev.vars with random ${missing.join(", ")}`,
  );
  return vars;
}

function applyMigrations() {
  console.log("start: applying local D1 migrations");
  const r = spawnSync(WRANGLER, ["d1", "migrations", "apply", "DB", "--local", "--persist-to", PERSIST], {
    cwd: ROOT,
    env: { ...quietEnv, CI: "true" },
    stdio: ["ignore", "inherit", "inherit"],
  });
  if (r.status !== 0) {
    console.error(`start: D1 migrations failed (exit ${r.status ?? r.signal})`);
    process.exit(r.status || 1);
  }
}

/**
 * Provisions a dev device and mints a token for it, so the banner can show an
 * authenticated example. vars: the values from .dev.vars (ADMIN_TOKEN, ...).
 */
async function bootstrapDevAccount(baseUrl, vars) {
  const api = async (method, path, body) => {
    const res = await fetch(`${baseUrl}/admin/v1${path}`, {
      method,
      headers: { authorization: `Bearer ${vars.ADMIN_TOKEN}`, "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    return { status: res.status, json: text ? JSON.parse(text) : null };
  };
  // The device's password is shown once by the API; keep it beside the local state so a
  // second `npm start` prints the same credentials.
  let saved = null;
  try {
    saved = JSON.parse(readFileSync(DEV_CREDENTIALS, "utf8"));
  } catch {
    saved = null;
  }
  const existing = await api("GET", `/accounts/${DEV_ACCOUNT}/devices/${DEV_DEVICE}`);
  let device;
  if (existing.status === 200 && saved && saved.deviceId === DEV_DEVICE && typeof saved.password === "string") {
    device = saved;
  } else {
    if (existing.status === 200) await api("DELETE", `/accounts/${DEV_ACCOUNT}/devices/${DEV_DEVICE}`);
    const created = await api("POST", `/accounts/${DEV_ACCOUNT}/devices`, { deviceId: DEV_DEVICE });
    if (created.status !== 201) throw new Error(`creating the dev device: ${created.status} ${JSON.stringify(created.json)}`);
    device = created.json;
    writeFileSync(DEV_CREDENTIALS, JSON.stringify(device, null, 2) + "\n", { mode: 0o600 });
  }
  const grants = { pub: ["#"], sub: ["#", "$SYS/#"] };
  const minted = await api("POST", `/accounts/${DEV_ACCOUNT}/tokens`, { subject: DEV_USER, ttlSeconds: 86400, acl: grants });
  if (minted.status !== 201) throw new Error(`minting the dev token: ${minted.status} ${JSON.stringify(minted.json)}`);
  const token = minted.json.token;
  const ws = `ws://127.0.0.1:${port}/mqtt`;
  const topic = `xi/blue/v1/${DEV_ACCOUNT}/d/${device.deviceId}/hello`;
  const basic = Buffer.from(`${device.deviceId}:${device.password}`).toString("base64");
  return [
    "",
    `  Web console (signs in as ${DEV_USER}; the token stays in the URL fragment, never sent to the server):`,
    `    ${baseUrl}/#token=${encodeURIComponent(token)}&user=${DEV_USER}`,
    "",
    `  Development account "${DEV_ACCOUNT}":`,
    `    device    id ${device.deviceId}   password ${device.password}   (client id = user name = device id)`,
    `    user      ${DEV_USER}, token valid 24 h (user name ${DEV_USER}, password = the token):`,
    `              ${token}`,
    "",
    "  Watch everything in the account as the user (terminal 1):",
    `    npx mqtt sub -l ws -h 127.0.0.1 -p ${port} --path /mqtt -i ${DEV_USER} -u ${DEV_USER} -P '${token}' -t '#' -v`,
    "  Publish as the device (terminal 2):",
    `    npx mqtt pub -l ws -h 127.0.0.1 -p ${port} --path /mqtt -i ${device.deviceId} -u ${device.deviceId} -P '${device.password}' -t ${topic} -m hi`,
    "  Publish over HTTP as the device:",
    `    curl -X POST '${baseUrl}/api/v1/messages?topic=${topic}&qos=1' -H 'Authorization: Basic ${basic}' --data-binary hi`,
    "  MQTT.js:",
    `    mqtt.connect("${ws}", { clientId: "${device.deviceId}", username: "${device.deviceId}", password: "${device.password}" })`,
  ];
}

let refusedConfig = false;

/** Polls /health until 200; a 500 `config_invalid` (a var this script could not see) stops the broker. */
async function waitForHealth(baseUrl, child) {
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) return false;
    try {
      const res = await fetch(`${baseUrl}/health`);
      if (res.ok) return true;
      const body = res.status === 500 ? await res.json().catch(() => null) : null;
      if (body?.error?.code === "config_invalid") {
        console.error(`start: stopping, the broker reports an invalid config: ${body.error.message}`);
        refusedConfig = true;
        child.kill("SIGTERM");
        return false;
      }
    } catch {
      // not up yet
    }
    await new Promise((r) => setTimeout(r, 250));
  }
}

function banner(baseUrl, anonymousAccount, extra) {
  const lines = [
    "",
    "MQTT broker is up",
    `  MQTT over WebSocket:  ws://127.0.0.1:${port}/mqtt`,
    `  HTTP:                 ${baseUrl}  (health: ${baseUrl}/health)`,
    anonymousAccount
      ? `  Anonymous clients land in account "${anonymousAccount}" (ANONYMOUS_ACCOUNT in wrangler.toml)`
      : "  Anonymous access is off (ANONYMOUS_ACCOUNT is empty in wrangler.toml)",
    ...(extra ?? []),
    "",
    "  Ctrl-C stops the broker.",
    "",
  ];
  console.log(lines.join("\n"));
}

/** ANONYMOUS_ACCOUNT from wrangler.toml's [vars] (for the banner only). */
function anonymousAccountFromToml() {
  try {
    const toml = readFileSync(join(ROOT, "wrangler.toml"), "utf8");
    const m = /^\s*ANONYMOUS_ACCOUNT\s*=\s*"([^"]*)"/m.exec(toml);
    return m ? m[1] : "";
  } catch {
    return "";
  }
}

const vars = ensureDevVars();
applyMigrations();

const child = spawn(
  WRANGLER,
  [
    "dev",
    "--ip",
    "127.0.0.1",
    "--port",
    String(port),
    "--persist-to",
    PERSIST,
    "--show-interactive-dev-session=false",
    ...Object.entries(varArgs).flatMap(([k, v]) => ["--var", `${k}:${v}`]),
  ],
  { cwd: ROOT, env: quietEnv, stdio: "inherit" },
);

for (const sig of ["SIGINT", "SIGTERM"]) {
  process.on(sig, () => {
    if (child.exitCode === null && child.signalCode === null) child.kill(sig);
  });
}
child.on("error", (err) => {
  console.error(`start: could not run wrangler: ${err.message}`);
  process.exit(1);
});
child.on("exit", (code, signal) => {
  if (refusedConfig) process.exit(2);
  if (signal) process.exit(128 + ({ SIGINT: 2, SIGTERM: 15, SIGKILL: 9 }[signal] ?? 1));
  process.exit(code ?? 1);
});

const baseUrl = `http://127.0.0.1:${port}`;
if (await waitForHealth(baseUrl, child)) {
  let extra;
  try {
    extra = await bootstrapDevAccount(baseUrl, vars);
  } catch (err) {
    console.error(`start: dev account bootstrap failed: ${err instanceof Error ? err.message : err}`);
  }
  banner(baseUrl, varArgs.ANONYMOUS_ACCOUNT ?? anonymousAccountFromToml(), Array.isArray(extra) ? extra : undefined);
}
