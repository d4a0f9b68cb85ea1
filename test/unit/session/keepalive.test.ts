import { describe, expect, it } from "vitest";
import { LIVENESS_CHECK_MS, alarmAfterConnack, alarmVerdict, keepAliveDeadline, nextAlarm } from "../../../src/session/keepalive";
import type { Attachment } from "../../../src/session/state";

type Clock = Pick<Attachment, "phase" | "openedAt" | "lastSeen" | "keepAlive" | "expiresAt" | "alarmAt">;

/**
 * Plays the connection object's alarm against a client, as `connection.ts` runs it: packets only
 * move `lastSeen` (the attachment), the alarm re-arms itself from `nextAlarm`. Returns when the
 * alarm closed the connection (or null) and how many times it ran.
 */
function play(opts: { keepAlive: number; checkSeconds: number; packets: (t: number) => boolean; until: number; connectTimeoutMs?: number }) {
  const connectTimeoutMs = opts.connectTimeoutMs ?? 30_000;
  const att: Clock = { phase: "connected", openedAt: 0, lastSeen: 0, keepAlive: opts.keepAlive, expiresAt: null, alarmAt: connectTimeoutMs };
  let alarm: number = alarmAfterConnack(att, 0, opts.checkSeconds) ?? connectTimeoutMs;
  let runs = 0;
  for (let t = 0; t <= opts.until; t += 100) {
    if (t > 0 && opts.packets(t)) att.lastSeen = t;
    if (t < alarm) continue;
    runs++;
    if (alarmVerdict(att, t, connectTimeoutMs) !== null) return { closedAt: t, runs, lastSeen: att.lastSeen };
    alarm = nextAlarm(att, t, opts.checkSeconds);
  }
  return { closedAt: null, runs, lastSeen: att.lastSeen };
}

const every = (ms: number, stopAt = Number.POSITIVE_INFINITY) => (t: number) => t % ms === 0 && t <= stopAt;

describe("keep-alive alarm", () => {
  it("the alarm runs at the earliest of keep-alive deadline, token expiry and the liveness check", () => {
    expect(keepAliveDeadline(0, 0)).toBeNull();
    expect(nextAlarm({ lastSeen: 0, keepAlive: 10, expiresAt: null }, 0)).toBe(16_000);
    expect(nextAlarm({ lastSeen: 0, keepAlive: 0, expiresAt: 5 }, 0)).toBe(5);
    expect(nextAlarm({ lastSeen: 0, keepAlive: 0, expiresAt: null }, 0)).toBe(LIVENESS_CHECK_MS);
  });

  it("KEEPALIVE_CHECK_SECONDS: the alarm runs no sooner than the granularity, the token expiry stays exact", () => {
    expect(nextAlarm({ lastSeen: 0, keepAlive: 60, expiresAt: null }, 0, 300)).toBe(300_000);
    expect(nextAlarm({ lastSeen: 0, keepAlive: 600, expiresAt: null }, 0, 300)).toBe(901_000); // the deadline is later than one grain
    expect(nextAlarm({ lastSeen: 0, keepAlive: 60, expiresAt: 5_000 }, 0, 300)).toBe(5_000);
    expect(nextAlarm({ lastSeen: 0, keepAlive: 0, expiresAt: null }, 0, 3600)).toBe(3_600_000); // the liveness check follows a coarser grain
  });

  it("the connect-timeout alarm of the upgrade is the first keep-alive check when it runs before the deadline", () => {
    const at = (keepAlive: number, alarmAt?: number) => alarmAfterConnack({ lastSeen: 1_000, keepAlive, expiresAt: null, ...(alarmAt === undefined ? {} : { alarmAt }) }, 1_000);
    expect(at(60, 30_000)).toBeNull(); // deadline 92 s: the 30 s alarm checks first and re-arms
    expect(at(0, 30_000)).toBeNull(); // liveness check in 5 min
    expect(at(10, 30_000)).toBe(17_000); // deadline 17 s: before the connect timeout, armed now
    expect(at(60)).toBe(92_000); // an attachment from before `alarmAt`
    expect(alarmAfterConnack({ lastSeen: 1_000, keepAlive: 60, expiresAt: 10_000, alarmAt: 30_000 }, 1_000)).toBe(10_000);
  });

  it("a socket without CONNECT is closed at the connect timeout, not before", () => {
    const att = { phase: "connecting" as const, openedAt: 0, lastSeen: 0, keepAlive: 0, expiresAt: null };
    expect(alarmVerdict(att, 29_999, 30_000)).toBeNull();
    expect(alarmVerdict(att, 30_000, 30_000)).toBe("connectTimeout");
  });

  for (const checkSeconds of [0, 5, 30, 300]) {
    const keepAlive = 10;
    const bound = keepAlive * 1500 + 1000 + checkSeconds * 1000;
    it(`KEEPALIVE_CHECK_SECONDS=${checkSeconds}: a client silent after 60 s is closed within 1.5 × keep alive + 1 s + ${checkSeconds} s; one talking every keep alive never is`, () => {
      const silent = play({ keepAlive, checkSeconds, packets: every(keepAlive * 1000, 60_000), until: 60_000 + bound + 1_000 });
      expect(silent.lastSeen).toBe(60_000);
      expect(silent.closedAt).not.toBeNull();
      expect(silent.closedAt! - 60_000).toBeGreaterThanOrEqual(keepAlive * 1500);
      expect(silent.closedAt! - 60_000).toBeLessThanOrEqual(bound);

      const day = 24 * 3600_000;
      const talking = play({ keepAlive, checkSeconds, packets: every(keepAlive * 1000), until: day });
      expect(talking.closedAt).toBeNull();
      // The cost: one alarm run (and one setAlarm) per keep-alive period, or per grain when that is longer.
      const period = Math.max(keepAlive, checkSeconds) * 1000;
      expect(talking.runs).toBeLessThanOrEqual(Math.ceil(day / period) + 1);
      expect(talking.runs).toBeGreaterThanOrEqual(Math.floor(day / period) - 1);
    });
  }

  it("a client whose packets come just inside 1.5 × keep alive is never cut", () => {
    const r = play({ keepAlive: 4, checkSeconds: 0, packets: every(5_900), until: 3600_000 });
    expect(r.closedAt).toBeNull();
  });
});
