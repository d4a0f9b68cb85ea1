// The servers under test, each started on 127.0.0.1 as its own process (group) so its CPU time
// and memory can be read from /proc, and stopped by its own PID only.
import { spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, statfsSync, symlinkSync, writeFileSync } from "node:fs";
import { SignJWT } from "jose";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { listeningPorts, treeStats } from "./proc.mjs";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const WRANGLER = join(ROOT, "node_modules/.bin/wrangler");
/** The open-file limit `wrangler dev` asks for (see wranglerDev). */
const FD_LIMIT = 262144;

/** A free TCP port on 127.0.0.1. */
export function freePort() {
  return new Promise((ok, fail) => {
    const srv = createServer();
    srv.once("error", fail);
    srv.listen(0, "127.0.0.1", () => {
      const addr = srv.address();
      srv.close(() => ok(typeof addr === "object" && addr ? addr.port : 0));
    });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Keeps the last lines of a child's output for error messages (and drains the pipe). */
function tail(child, max = 200) {
  const lines = [];
  const take = (d) => {
    for (const l of d.toString().split("\n")) {
      if (l === "") continue;
      lines.push(l);
      if (lines.length > max) lines.shift();
    }
  };
  child.stdout?.on("data", take);
  child.stderr?.on("data", take);
  return () => lines.join("\n");
}

function killGroup(child, signal) {
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  try {
    process.kill(-child.pid, signal);
  } catch {
    // already gone
  }
}

async function waitExit(child, ms) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  await new Promise((ok) => {
    const t = setTimeout(ok, ms);
    child.once("exit", () => {
      clearTimeout(t);
      ok();
    });
  });
}

/**
 * Where the bench's clients reach a `wrangler dev` server. By default the local runtime's own
 * port, past wrangler's dev proxy: the proxy is a second runtime process that parses and re-sends
 * every frame (5–11 µs of CPU per frame here, measured by the `floor-proxy` row), a cost of
 * local development that a deployed Worker does not have (the edge terminates the WebSocket).
 * `setViaProxy(true)` (`--via-proxy`) measures through it, as runs before 2026-12-02 did.
 */
let viaProxy = false;
export function setViaProxy(on) {
  viaProxy = on;
}

/**
 * The `ws://` origin the clients use for a `wrangler dev` server on `port` whose runtime answers at
 * `direct` (or null), and the words a peer's label gives that path.
 */
function clientOrigin(port, direct) {
  const past = !viaProxy && direct !== null;
  return { origin: past ? direct.replace("http:", "ws:") : `ws://127.0.0.1:${port}`, via: past ? "the runtime's own port" : "through its proxy" };
}

/** Every child started here, so an interrupted bench can stop them (by their own PIDs). */
const started = new Set();
/** Temporary directories made here, removed by stopAllNow as well. */
const tempDirs = new Set();
export function stopAllNow() {
  for (const child of started) killGroup(child, "SIGKILL");
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
}

function tempDir(prefix, parent = tmpdir()) {
  const dir = mkdtempSync(join(parent, prefix));
  tempDirs.add(dir);
  return dir;
}

/**
 * Where a `wrangler dev` server keeps its Durable Object and D1 state: on disk under the temporary
 * directory, or with `setStateInRam(true)` (`--state-in-ram`) in a RAM file system (`/dev/shm`, when it
 * has 4 GiB free). The local runtime gives every Durable Object its own SQLite files, created with the
 * object; on this machine's ext4 that was about half of a connect's runtime CPU, swinging between runs
 * with how many files were deleted just before (the naive design pays it alike). In RAM that cost goes,
 * but the runtime holds more memory per object and a storm of 5,000 persistent sessions fails with
 * SQLite out of memory from about 1,400 held connections (bench/README.md, 2026-12-02 17:20): not the
 * default.
 */
const RAM_FS = "/dev/shm";
/** A 5,000-connection storm keeps two objects' SQLite files per connection: a container's 64 MiB /dev/shm is not enough. */
const RAM_FS_MIN_FREE = 4 * 2 ** 30;
let stateInRamAsked = false;
export function setStateInRam(on) {
  stateInRamAsked = on;
}

function stateInRam() {
  if (!stateInRamAsked || !existsSync(RAM_FS)) return false;
  try {
    const fs = statfsSync(RAM_FS);
    return fs.bavail * fs.bsize >= RAM_FS_MIN_FREE;
  } catch {
    return false;
  }
}

function stateDir(prefix) {
  return tempDir(prefix, stateInRam() ? RAM_FS : tmpdir());
}

/** Where the state in `dir` lives, for a server's label (a restart reuses an earlier server's directory). */
function stateWhere(dir) {
  return dir.startsWith(`${RAM_FS}/`) ? "state in RAM" : "state on disk";
}

function track(child) {
  started.add(child);
  child.once("exit", () => started.delete(child));
}

async function stopChild(child) {
  killGroup(child, "SIGTERM");
  await waitExit(child, 5000);
  killGroup(child, "SIGKILL");
  await waitExit(child, 2000);
}

/**
 * The processes of a `wrangler dev` tree that a deployed Worker also has: the runtime (and, through
 * the proxy, the proxy's own workerd). The rest is the dev tool: wrangler's node process (the bundler,
 * the file watcher, the inspector proxy, the reader of every console line the runtime writes) and
 * esbuild. A connect's and a close's CPU is reported for the whole tree and for these alone.
 */
const RUNTIME_COMMAND = "workerd";

/** What `wrangler dev` needs of the project, copied for the bench's snapshot. */
const SNAPSHOT = ["src", "migrations", "public", "scripts", "wrangler.toml", "package.json", "tsconfig.json"];

/**
 * `wrangler dev` (local mode) in `cwd` on `port`, in its own process group; resolves once
 * `/health` answers. The local runtime needs about ten file descriptors per held connection
 * (the dev proxy's two sockets and their buffers, the runtime's socket, each object's SQLite
 * files): the usual soft limit stops a connect storm at a few thousand (`accept: Too many open
 * files` kills the dev proxy). Raised as far as this user may, as for any load test.
 */
async function wranglerDev(cwd, port, extraArgs, env) {
  const args = ["dev", "--ip", "127.0.0.1", "--port", String(port), "--show-interactive-dev-session=false", "--log-level", "warn", ...extraArgs];
  const child = spawn("sh", ["-c", `ulimit -n ${FD_LIMIT} 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null; exec "$0" "$@"`, WRANGLER, ...args], { cwd, env, detached: true, stdio: ["ignore", "pipe", "pipe"] });
  track(child);
  const output = tail(child);
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`wrangler dev exited early (${child.exitCode}):\n${output()}`);
    try {
      if ((await fetch(`${url}/health`)).ok) break;
    } catch {
      // not up yet
    }
    if (Date.now() > deadline) {
      await stopChild(child);
      throw new Error(`wrangler dev did not answer /health within 60 s:\n${output()}`);
    }
    await sleep(200);
  }
  return { child, output, url };
}

/**
 * The runtime's own address behind `wrangler dev`'s proxy: a port the user worker's workerd
 * (its `--socket entry=127.0.0.1:0`) listens on and that answers `/health`. The dev proxy holds
 * two sockets and their buffers per connection; a storm of thousands reaches the open-file limit
 * there first. Null when it cannot be found.
 */
async function runtimeUrl(rootPid) {
  for (const proc of treeStats(rootPid)) {
    if (proc.comm !== "workerd") continue;
    let args = "";
    try {
      args = readFileSync(`/proc/${proc.pid}/cmdline`, "utf8");
    } catch {
      continue;
    }
    if (!args.includes("entry=127.0.0.1:0")) continue;
    for (const port of listeningPorts(proc.pid)) {
      try {
        if ((await fetch(`http://127.0.0.1:${port}/health`)).ok) return `http://127.0.0.1:${port}`;
      } catch {
        // not this one
      }
    }
  }
  return null;
}

function wranglerEnv() {
  return {
    ...process.env,
    CLOUDFLARE_CF_FETCH_ENABLED: "false",
    WRANGLER_SEND_METRICS: "false",
    XDG_CONFIG_HOME: join(ROOT, ".wrangler/config"),
    NO_COLOR: "1",
  };
}

/**
 * The broker: `wrangler dev` (local mode) in its own process group, with its own temporary
 * persist directory, anonymous access into account `bench`, and the billable-unit counters on.
 * It runs from a snapshot of the working tree taken at start: `wrangler dev` rebuilds and
 * restarts on every source change, which would reset the objects (and the counters) mid-run
 * whenever someone edits src/ while the bench runs.
 */
export async function startBroker({ vars = {}, persistDir: reuse } = {}) {
  const port = await freePort();
  const app = tempDir("mqtt-bench-app-");
  for (const entry of SNAPSHOT) {
    if (existsSync(join(ROOT, entry))) cpSync(join(ROOT, entry), join(app, entry), { recursive: true, filter: (src) => !src.includes("/public/vendor") });
  }
  symlinkSync(join(ROOT, "node_modules"), join(app, "node_modules"));
  // `persistDir`: the state of an earlier broker (the scale scenario's restart); else a fresh one.
  const persistDir = reuse ?? stateDir("mqtt-bench-broker-");
  const env = wranglerEnv();
  const mig = reuse ? { status: 0 } : spawnSync(WRANGLER, ["d1", "migrations", "apply", "DB", "--local", "--persist-to", persistDir], {
    cwd: app,
    env: { ...env, CI: "true" },
    encoding: "utf8",
  });
  if (mig.status !== 0) throw new Error(`D1 migrations failed:\n${mig.stdout}\n${mig.stderr}`);
  // The per-connection rate limits (publishes, packets, packets per frame) are policy, not capacity: lifted for the bench
  // (the other brokers have none), or the publishers would be disconnected.
  const allVars = { ANONYMOUS_ACCOUNT: "bench", BENCH_COUNTERS: "1", PACKET_RATE_PER_SECOND: "1000000000", PACKET_BURST: "1000000000", MAX_PACKETS_PER_FRAME: "1000000", PUBLISH_RATE_PER_SECOND: "1000000000", PUBLISH_BURST: "1000000000", ...vars };
  const args = ["--persist-to", persistDir];
  for (const [k, v] of Object.entries(allVars)) args.push("--var", `${k}:${v}`);
  const { child, output, url } = await wranglerDev(app, port, args, env);
  const counters = {
    async reset() {
      const res = await fetch(`${url}/__bench/counters/reset`, { method: "POST" });
      if (!res.ok) throw new Error(`counter reset: HTTP ${res.status}`);
    },
    async read() {
      const res = await fetch(`${url}/__bench/counters`);
      if (!res.ok) throw new Error(`counters: HTTP ${res.status}`);
      return res.json();
    },
  };
  const direct = await runtimeUrl(child.pid);
  const { origin, via } = clientOrigin(port, direct);
  return {
    name: "broker",
    label: `broker (wrangler dev, ${via}, ${stateWhere(persistDir)})`,
    via,
    state: stateWhere(persistDir),
    runtimeCommand: RUNTIME_COMMAND,
    wsUrl: `${origin}/mqtt`,
    /** The same broker through `wrangler dev`'s proxy. */
    proxyWsUrl: `ws://127.0.0.1:${port}/mqtt`,
    /** The same broker without the dev proxy in front (the storm's thousands of sockets), or null. */
    directWsUrl: direct ? `${direct.replace("http:", "ws:")}/mqtt` : null,
    pid: child.pid,
    persistDir,
    counters,
    output,
    /** `keepState`: leave the persist directory for a restart on it (removed at exit anyway). */
    async stop({ keepState = false } = {}) {
      await stopChild(child);
      if (!keepState) rmSync(persistDir, { recursive: true, force: true });
      rmSync(app, { recursive: true, force: true });
    },
  };
}

/** The `[vars]` of wrangler.toml (the broker's defaults), as strings. */
export function wranglerVars() {
  const text = readFileSync(join(ROOT, "wrangler.toml"), "utf8");
  const section = text.split(/^\[vars\]\s*$/m)[1]?.split(/^\[/m)[0] ?? "";
  return Object.fromEntries([...section.matchAll(/^([A-Z_]+)\s*=\s*"([^"]*)"/gm)].map((m) => [m[1], m[2]]));
}

/** The rate limits a deployed broker has by default (wrangler.toml), which the main bench broker lifts. */
const RATE_VARS = ["PUBLISH_RATE_PER_SECOND", "PUBLISH_BURST", "PACKET_RATE_PER_SECOND", "PACKET_BURST", "MAX_PACKETS_PER_FRAME"];

/**
 * A second broker for the bystander scenario: the default rate limits of wrangler.toml (not
 * lifted) and a random JWT secret, so clients of other accounts can connect with a token.
 * `auth(account)` returns `(clientId) => {username, password}` for a JWT identity of
 * `account` whose user name and client id are `clientId` (single-connection mode).
 */
export async function startLimitedBroker() {
  const defaults = wranglerVars();
  const secret = randomBytes(32).toString("hex");
  const vars = { JWT_SECRET: secret, ...Object.fromEntries(RATE_VARS.map((k) => [k, defaults[k] ?? ""])) };
  const broker = await startBroker({ vars });
  const key = new TextEncoder().encode(secret);
  return {
    ...broker,
    label: `broker (wrangler dev, ${broker.via}, ${broker.state}, default rate limits)`,
    limits: Object.fromEntries(RATE_VARS.map((k) => [k, Number(defaults[k])])),
    /** @param {string} account */
    auth: (account) => async (/** @type {string} */ clientId) => ({
      username: clientId,
      password: await new SignJWT({ acc: account }).setProtectedHeader({ alg: "HS256", typ: "JWT" }).setSubject(clientId).setIssuedAt().setExpirationTime("1h").sign(key),
    }),
  };
}

/** aedes over WebSocket (and plain TCP for the native row), in a child process (bench/peers/aedes-server.mjs). */
export async function startAedes() {
  const port = await freePort();
  const tcpPort = await freePort();
  const child = spawn(process.execPath, [join(ROOT, "bench/peers/aedes-server.mjs"), String(port), String(tcpPort)], {
    cwd: ROOT,
    detached: true,
    stdio: ["ignore", "pipe", "pipe"],
  });
  track(child);
  const output = tail(child);
  await new Promise((ok, fail) => {
    const t = setTimeout(() => fail(new Error(`aedes did not start:\n${output()}`)), 15_000);
    child.stdout.on("data", (d) => {
      if (d.toString().includes("ready")) {
        clearTimeout(t);
        ok();
      }
    });
    child.once("exit", (code) => fail(new Error(`aedes exited (${code}):\n${output()}`)));
  });
  return {
    name: "aedes",
    label: "aedes 1.2 (node, ws)",
    wsUrl: `ws://127.0.0.1:${port}/`,
    tcpUrl: `mqtt://127.0.0.1:${tcpPort}`,
    pid: child.pid,
    counters: null,
    output,
    stop: () => stopChild(child),
  };
}

/**
 * The naive peer (bench/peers/naive): one Durable Object per connection calling one router
 * object per message, nothing stored or checked. It runs in the same local runtime as the
 * broker, so its figures are what the platform costs any design before the broker's own work.
 */
export async function startNaive() {
  const port = await freePort();
  const app = tempDir("mqtt-bench-naive-");
  cpSync(join(ROOT, "bench/peers/naive"), app, { recursive: true });
  symlinkSync(join(ROOT, "node_modules"), join(app, "node_modules"));
  const persistDir = stateDir("mqtt-bench-naive-state-");
  const { child, output } = await wranglerDev(app, port, ["--persist-to", persistDir], wranglerEnv());
  const { origin, via } = clientOrigin(port, await runtimeUrl(child.pid));
  return {
    name: "naive",
    label: `naive DO design (wrangler dev, ${via}, ${stateWhere(persistDir)})`,
    runtimeCommand: RUNTIME_COMMAND,
    wsUrl: `${origin}/mqtt`,
    /** The `floor` scenario's do-nothing hibernatable socket. */
    floorUrl: `${origin}/floor`,
    /** The same socket through `wrangler dev`'s proxy (the `floor-proxy` row). */
    proxyFloorUrl: `ws://127.0.0.1:${port}/floor`,
    pid: child.pid,
    counters: null,
    lacks: ["retained"],
    output,
    async stop() {
      await stopChild(child);
      rmSync(persistDir, { recursive: true, force: true });
      rmSync(app, { recursive: true, force: true });
    },
  };
}

/** The path of `mosquitto` on PATH, or null. */
export function findMosquitto() {
  for (const dir of (process.env.PATH ?? "").split(":").concat(["/usr/sbin", "/usr/local/sbin"])) {
    if (dir && existsSync(join(dir, "mosquitto"))) return join(dir, "mosquitto");
  }
  return null;
}

/** mosquitto with one WebSocket listener on 127.0.0.1 (only when it is installed). */
export async function startMosquitto(bin) {
  const port = await freePort();
  const tcpPort = await freePort();
  const dir = tempDir("mqtt-bench-mosquitto-");
  const conf = join(dir, "mosquitto.conf");
  writeFileSync(
    conf,
    [
      // Debian's mosquitto 2.0.11 exits with "Unable to start any listening sockets" when its
      // only listener is a WebSocket one: the plain listener keeps it up (and serves the
      // native fan-in row).
      `listener ${tcpPort} 127.0.0.1`,
      `listener ${port} 127.0.0.1`,
      "protocol websockets",
      // Without it libwebsockets binds every interface instead of 127.0.0.1.
      "socket_domain ipv4",
      "allow_anonymous true",
      "persistence false",
      "log_dest stderr",
      "log_type error",
      "max_queued_messages 100000",
      "",
    ].join("\n"),
  );
  const child = spawn(bin, ["-c", conf], { cwd: dir, detached: true, stdio: ["ignore", "pipe", "pipe"] });
  track(child);
  const output = tail(child);
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`mosquitto exited (${child.exitCode}):\n${output()}`);
    const up = await new Promise((ok) => {
      const s = createServer();
      s.once("error", () => ok(true)); // port taken = listening
      s.listen(port, "127.0.0.1", () => s.close(() => ok(false)));
    });
    if (up) break;
    if (Date.now() > deadline) {
      await stopChild(child);
      throw new Error(`mosquitto did not listen within 10 s:\n${output()}`);
    }
    await sleep(100);
  }
  const version = spawnSync(bin, ["-h"], { encoding: "utf8" }).stdout?.match(/mosquitto version ([\d.]+)/)?.[1] ?? "";
  return {
    name: "mosquitto",
    label: `mosquitto ${version} (C, libwebsockets)`.replace("  ", " "),
    wsUrl: `ws://127.0.0.1:${port}/`,
    tcpUrl: `mqtt://127.0.0.1:${tcpPort}`,
    pid: child.pid,
    counters: null,
    output,
    async stop() {
      await stopChild(child);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * The project's TCP → WebSocket bridge (bridge/cli.mjs) in front of `wsUrl`, in its own process
 * group, for the native fan-in row: plain TCP on 127.0.0.1 in, one WebSocket per connection out.
 * Returns its `mqtt://` URL and its PID (its CPU is read from /proc like a server's).
 */
export async function startBridge(wsUrl) {
  const port = await freePort();
  const child = spawn(process.execPath, [join(ROOT, "bridge/cli.mjs"), "--listen", `127.0.0.1:${port}`, "--to", wsUrl], {
    cwd: ROOT,
    detached: true,
    stdio: ["ignore", "pipe", "pipe"],
  });
  track(child);
  const output = tail(child, 50); // one JSON line per connection: drained, the last kept
  await new Promise((ok, fail) => {
    const t = setTimeout(() => fail(new Error(`bridge did not start:\n${output()}`)), 15_000);
    const onData = (d) => {
      if (d.toString().includes('"listening"')) {
        clearTimeout(t);
        child.stdout.off("data", onData);
        ok();
      }
    };
    child.stdout.on("data", onData);
    child.once("exit", (code) => fail(new Error(`bridge exited (${code}):\n${output()}`)));
  });
  return { tcpUrl: `mqtt://127.0.0.1:${port}`, pid: child.pid, output, stop: () => stopChild(child) };
}
