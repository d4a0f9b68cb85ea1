import { describe, it, expect } from "vitest";
import { ClockSchedule } from "../../../src/session/clock-schedule";
import { alarmAfterConnack, alarmFor } from "../../../src/session/keepalive";

describe("ClockSchedule: the keep-alive clock's deadlines", () => {
  it("gives the connections due at a time, earliest first, never before their deadline, each once", () => {
    const s = new ClockSchedule(10);
    s.set("b", 5_500);
    s.set("a", 2_000);
    s.set("c", 5_900);
    expect(s.next()).toBe(2_000);
    expect(s.takeDue(1_999)).toEqual([]);
    expect(s.takeDue(2_000)).toEqual(["a"]);
    // 5,500 and 5,900 share the bucket of second 6: checked at 6,000, not before their deadline.
    expect(s.next()).toBe(6_000);
    expect(s.takeDue(5_999)).toEqual([]);
    expect(s.takeDue(60_000).sort()).toEqual(["b", "c"]);
    expect(s.size).toBe(0);
    expect(s.next()).toBeNull();
  });

  it("moves a connection's deadline instead of adding a second one, and forgets a deleted one", () => {
    const s = new ClockSchedule(10);
    s.set("a", 1_000);
    s.set("a", 9_000);
    s.set("b", 3_000);
    s.delete("b");
    expect(s.size).toBe(1);
    expect(s.next()).toBe(9_000);
    expect(s.takeDue(8_999)).toEqual([]);
    expect(s.takeDue(9_000)).toEqual(["a"]);
  });

  it("is bounded: past `max` a new connection is refused (it keeps its own exact alarm), a known one still moves, a forced one enters", () => {
    const s = new ClockSchedule(2);
    expect(s.set("a", 1_000)).toBe(true);
    expect(s.set("b", 2_000)).toBe(true);
    expect(s.set("c", 3_000)).toBe(false);
    expect(s.has("c")).toBe(false);
    expect(s.set("a", 4_000)).toBe(true);
    expect(s.size).toBe(2);
    expect(s.set("d", 5_000, true)).toBe(true);
    s.delete("d");
    expect(s.takeDue(10_000).sort()).toEqual(["a", "b"]);
    expect(s.set("c", 3_000)).toBe(true);
  });

  it("keeps order over many deadlines set out of order", () => {
    const s = new ClockSchedule(10_000);
    const ids = Array.from({ length: 2_000 }, (_, i) => i);
    for (const i of [...ids].reverse()) s.set(`c${i}`, ((i * 7919) % 2_000) * 1000);
    const seen: string[] = [];
    let last = -1;
    for (let t = 0; t <= 2_000_000; t += 250_000) {
      const due = s.takeDue(t);
      for (const c of due) {
        const at = ((Number(c.slice(1)) * 7919) % 2_000) * 1000;
        expect(at).toBeLessThanOrEqual(t);
        expect(at).toBeGreaterThan(last);
      }
      last = t;
      seen.push(...due);
    }
    expect(new Set(seen).size).toBe(2_000);
  });
});

describe("the connection's alarm when the clock watches it", () => {
  it("runs only for a token's expiry; without the clock, at the keep-alive deadline", () => {
    const att = { lastSeen: 0, keepAlive: 60, expiresAt: null };
    expect(alarmFor(att, 0)).toBe(91_000);
    expect(alarmFor({ ...att, clocked: true }, 0)).toBeNull();
    expect(alarmFor({ ...att, clocked: true, expiresAt: 42_000 }, 0)).toBe(42_000);
    // After CONNACK nothing is armed for it: the connect-timeout alarm of the upgrade runs once and is not re-armed.
    expect(alarmAfterConnack({ ...att, clocked: true, alarmAt: 30_000 }, 0)).toBeNull();
    expect(alarmAfterConnack({ ...att, clocked: true, alarmAt: 30_000, expiresAt: 42_000 }, 0)).toBeNull();
    expect(alarmAfterConnack({ ...att, clocked: true, alarmAt: 30_000, expiresAt: 10_000 }, 0)).toBe(10_000);
  });
});
