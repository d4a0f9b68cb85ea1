import { describe, expect, it } from "vitest";
import { meterStub, resetCounters, snapshot } from "../../src/metrics";

// The counters read BENCH_COUNTERS once per isolate: this file turns them on with its first call.
const ON = { BENCH_COUNTERS: "1" };

class FakeStub {
  calls: string[] = [];
  readonly label = "fake";
  deliver(a: number, b: number): number {
    this.calls.push(`deliver ${a} ${b}`);
    return a + b;
  }
  fetch(): string {
    return "fetched";
  }
}

describe("meterStub (bench counters)", () => {
  it("counts every call of a method, forwards arguments, result and this, and leaves fetch and plain properties alone", () => {
    const target = new FakeStub();
    const stub = meterStub(ON, target, "connection");
    resetCounters();
    expect(stub.deliver(1, 2)).toBe(3);
    expect(stub.deliver(3, 4)).toBe(7);
    // The same wrapper comes back for the same method, and it still counts each call.
    const deliver = stub.deliver;
    expect(stub.deliver).toBe(deliver);
    expect(deliver.call(stub, 5, 6)).toBe(11);
    expect(stub.fetch()).toBe("fetched");
    expect(stub.label).toBe("fake");
    expect(target.calls).toEqual(["deliver 1 2", "deliver 3 4", "deliver 5 6"]);
    const counts = snapshot();
    expect(counts.totals.doRpc).toBe(3);
    expect(counts.detail).toEqual({ "doRpc:connection.deliver": 3 });
  });

  it("keeps the counts of two stubs apart by name", () => {
    const a = meterStub(ON, new FakeStub(), "router");
    const b = meterStub(ON, new FakeStub(), "session");
    resetCounters();
    a.deliver(1, 1);
    b.deliver(1, 1);
    b.deliver(2, 2);
    expect(snapshot().detail).toEqual({ "doRpc:router.deliver": 1, "doRpc:session.deliver": 2 });
  });
});
