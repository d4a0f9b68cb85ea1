import { describe, expect, it } from "vitest";
import { prometheusText, type AccountStats } from "../../src/monitoring/prometheus";
import { RouterCounters, emptyCounters, parseSnapshot, readCounters, rowsToCounters, PERSIST_INTERVAL_MS } from "../../src/router/counters";
import { batchPoint, connectionPoint } from "../../src/monitoring/analytics";

function stats(accountId: string): AccountStats {
  const counters = emptyCounters(1_700_000_000_500);
  counters.messagesIn = 7;
  counters.drops.queueFull = 2;
  return { accountId, counters, retained: { count: 3, bytes: 120, monitorEvents: 1 }, subscriptions: 4, sessions: { online: 1, offline: 2 } };
}

describe("prometheusText", () => {
  it("writes HELP and TYPE once per family and one sample per account and label set", () => {
    const text = prometheusText([stats("a"), stats("b")], { truncated: false });
    const lines = text.trimEnd().split("\n");
    expect(lines.filter((l) => l === "# TYPE mqtt_messages_in_total counter")).toHaveLength(1);
    expect(lines).toContain('mqtt_messages_in_total{account="a"} 7');
    expect(lines).toContain('mqtt_messages_in_total{account="b"} 7');
    expect(lines).toContain('mqtt_drops_total{account="a",reason="queueFull"} 2');
    expect(lines).toContain('mqtt_sessions{account="b",state="offline"} 2');
    expect(lines).toContain('mqtt_counters_start_time_seconds{account="a"} 1700000000');
    expect(lines).toContain("mqtt_metrics_accounts 2");
    expect(lines).toContain("mqtt_metrics_accounts_truncated 0");
    expect(text.endsWith("\n")).toBe(true);
  });

  it("escapes label values and reports truncation", () => {
    const text = prometheusText([stats('we"ird\\acc\n')], { truncated: true });
    expect(text).toContain('mqtt_subscriptions{account="we\\"ird\\\\acc\\n"} 4');
    expect(text).toContain("mqtt_metrics_accounts_truncated 1");
  });
});

describe("RouterCounters", () => {
  it("asks for a snapshot write at most once per interval, and only when something changed", () => {
    const c = new RouterCounters(0);
    expect(c.due(10_000)).toBe(false);
    c.add("messagesIn", 2);
    expect(c.due(10_000)).toBe(true);
    c.add("messagesIn", 1);
    expect(c.due(10_000 + PERSIST_INTERVAL_MS - 1)).toBe(false);
    expect(c.due(10_000 + PERSIST_INTERVAL_MS)).toBe(true);
    c.drop("qos0Offline", 0);
    expect(c.due(20_000)).toBe(false);
    expect(c.snapshot().messagesIn).toBe(3);
  });

  it("reads a stored snapshot back through a guard; missing or bad fields start at 0", () => {
    expect(readCounters(undefined, 5)).toEqual(emptyCounters(5));
    const read = readCounters({ messagesIn: 4, unmatched: "x", drops: { queueFull: 1, bogus: 9 }, since: 3 }, 5);
    expect(read).toEqual({ ...emptyCounters(3), messagesIn: 4, drops: { ...emptyCounters(3).drops, queueFull: 1 } });
  });
});

describe("the counters' snapshot (one router_state row)", () => {
  it("round-trips every field and drop reason through its JSON", () => {
    const v = emptyCounters(1234);
    v.messagesIn = 9;
    v.drops.sharedQueueFull = 4;
    expect(readCounters(parseSnapshot(JSON.stringify(v)), 0)).toEqual(v);
    expect(readCounters(parseSnapshot("{not json"), 7)).toEqual(emptyCounters(7));
  });

  it("reads the per-counter router_meta rows written before it", () => {
    const rows = [
      { key: "counter.messagesIn", value: 9 },
      { key: "counter.since", value: 1234 },
      { key: "counter.drops.sharedQueueFull", value: 4 },
      { key: "schema", value: 3 },
    ];
    const v = emptyCounters(1234);
    v.messagesIn = 9;
    v.drops.sharedQueueFull = 4;
    expect(readCounters(rowsToCounters(rows), 0)).toEqual(v);
  });
});

describe("Analytics Engine points", () => {
  it("index by account, name the event in blob1", () => {
    expect(batchPoint("acc", { messages: 3, unmatched: 1, deliveredOnline: 4, deliveredQueued: 2, dropped: 1, bytes: 99 })).toEqual({
      indexes: ["acc"],
      blobs: ["batch", "acc"],
      doubles: [3, 1, 4, 2, 1, 99],
    });
    expect(connectionPoint("disconnect", "acc", "c1")).toEqual({ indexes: ["acc"], blobs: ["disconnect", "acc", "c1"], doubles: [1] });
  });
});
