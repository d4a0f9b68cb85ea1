// CPU time and resident memory of a whole process tree, from /proc (Linux).
import { spawnSync } from "node:child_process";
import { readdirSync, readFileSync, readlinkSync } from "node:fs";

function getconf(name, fallback) {
  const r = spawnSync("getconf", [name], { encoding: "utf8" });
  const n = Number(r.stdout?.trim());
  return Number.isFinite(n) && n > 0 ? n : fallback;
}
const TICKS = getconf("CLK_TCK", 100);
const PAGE = getconf("PAGESIZE", 4096);

/**
 * CPU time of every thread of a process in nanoseconds, from /proc/<pid>/task/<tid>/schedstat
 * (far finer than the 10 ms ticks of /proc/<pid>/stat); null where schedstat is missing.
 */
function taskCpuNs(pid) {
  let total = 0;
  try {
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      try {
        total += Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, "utf8").split(" ")[0]);
      } catch {
        // thread ended
      }
    }
  } catch {
    return null;
  }
  return Number.isFinite(total) ? total : null;
}

/** @returns {{pid: number, ppid: number, comm: string, cpuNs: number, rssBytes: number} | null} */
function readStat(pid) {
  let text;
  try {
    text = readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch {
    return null; // gone
  }
  const close = text.lastIndexOf(")");
  const comm = text.slice(text.indexOf("(") + 1, close);
  const f = text.slice(close + 2).split(" "); // f[0] = state (field 3)
  const num = (field) => Number(f[field - 3]);
  // CPU of the process's threads, plus cutime + cstime of its children that exited and were
  // waited for (so a child ending mid-run does not take its CPU time out of the sum).
  const childTicks = num(16) + num(17);
  let cpuNs = taskCpuNs(pid);
  cpuNs = cpuNs === null ? ((num(14) + num(15) + childTicks) * 1e9) / TICKS : cpuNs + (childTicks * 1e9) / TICKS;
  return { pid, ppid: num(4), comm, cpuNs, rssBytes: num(24) * PAGE };
}

/** Every live process in the tree rooted at rootPid (rootPid included). */
export function treeStats(rootPid) {
  const all = [];
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    const s = readStat(Number(name));
    if (s) all.push(s);
  }
  const kids = new Map();
  for (const s of all) {
    if (!kids.has(s.ppid)) kids.set(s.ppid, []);
    kids.get(s.ppid).push(s);
  }
  const root = all.find((s) => s.pid === rootPid);
  if (!root) return [];
  const out = [];
  const stack = [root];
  while (stack.length > 0) {
    const s = stack.pop();
    out.push(s);
    for (const k of kids.get(s.pid) ?? []) stack.push(k);
  }
  return out;
}

/** CPU (ms, user + system) and RSS (bytes) summed over the tree, with a per-command breakdown. */
export function treeUsage(rootPid) {
  const procs = treeStats(rootPid);
  let cpuMs = 0;
  let rssBytes = 0;
  const byComm = {};
  for (const p of procs) {
    const ms = p.cpuNs / 1e6;
    cpuMs += ms;
    rssBytes += p.rssBytes;
    const c = (byComm[p.comm] ??= { cpuMs: 0, rssBytes: 0, count: 0 });
    c.cpuMs += ms;
    c.rssBytes += p.rssBytes;
    c.count++;
  }
  return { at: performance.now(), cpuMs, rssBytes, byComm, pids: procs.length };
}

/** CPU ms per command between two `treeUsage` readings. */
export function commandDelta(before, after) {
  const out = {};
  for (const [comm, v] of Object.entries(after.byComm)) out[comm] = v.cpuMs - (before.byComm[comm]?.cpuMs ?? 0);
  return out;
}

/** CPU of this process (the load generator), ms. */
export function selfCpuMs() {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}

/**
 * TCP ports on 127.0.0.1 that a process listens on, from its socket descriptors and
 * /proc/net/tcp (no `ss` needed). Used to reach the local runtime behind `wrangler dev`'s proxy.
 */
export function listeningPorts(pid) {
  const inodes = new Set();
  try {
    for (const fd of readdirSync(`/proc/${pid}/fd`)) {
      try {
        const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
        if (m) inodes.add(m[1]);
      } catch {
        // closed meanwhile
      }
    }
  } catch {
    return [];
  }
  const ports = [];
  for (const line of readFileSync("/proc/net/tcp", "utf8").split("\n").slice(1)) {
    const f = line.trim().split(/\s+/);
    // local_address rem_address st ... inode (field 10); 0A = LISTEN; 0100007F = 127.0.0.1
    if (f.length < 10 || f[3] !== "0A" || !inodes.has(f[9])) continue;
    const [addr, port] = f[1].split(":");
    if (addr === "0100007F") ports.push(parseInt(port, 16));
  }
  return ports;
}
