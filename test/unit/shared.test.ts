import { describe, it, expect } from "vitest";
import { SHARED_RUN, SharedGroups, sharedKey, type SharedRuns } from "../../src/router/shared";

describe("shared-subscription distribution", () => {
  const group = (members: string[]) => {
    const groups = new SharedGroups();
    for (const m of members) groups.join("g", "t/#", m, 1);
    return groups;
  };
  const key = sharedKey("g", "t/#");

  it("one message at a time (no batch): round robin over the members", () => {
    const groups = group(["a", "b", "c"]);
    expect(Array.from({ length: 6 }, () => groups.pick(key, () => true)?.clientId)).toEqual(["a", "b", "c", "a", "b", "c"]);
  });

  it("within a publish batch, runs of SHARED_RUN messages per member, then the next; the next batch starts a new run with the next member", () => {
    const groups = group(["a", "b", "c"]);
    const runs: SharedRuns = new Map();
    const batch = Array.from({ length: 2 * SHARED_RUN + 5 }, () => groups.pickInRun(key, () => true, runs)?.clientId);
    expect(batch).toEqual([...Array(SHARED_RUN).fill("a"), ...Array(SHARED_RUN).fill("b"), ...Array(5).fill("c")]);
    const next: SharedRuns = new Map();
    expect(Array.from({ length: 3 }, () => groups.pickInRun(key, () => true, next)?.clientId)).toEqual(["a", "a", "a"]);
    expect(groups.pickInRun(key, () => true, new Map())?.clientId).toBe("b");
  });

  it("a run ends early when its member goes offline or leaves; with none eligible, null", () => {
    const groups = group(["a", "b"]);
    const runs: SharedRuns = new Map();
    const online = new Set(["a", "b"]);
    const eligible = (id: string) => online.has(id);
    expect(groups.pickInRun(key, eligible, runs)?.clientId).toBe("a");
    online.delete("a");
    expect(groups.pickInRun(key, eligible, runs)?.clientId).toBe("b");
    groups.leave("g", "t/#", "b");
    groups.join("g", "t/#", "c", 0);
    online.add("c");
    expect(groups.pickInRun(key, eligible, runs)).toEqual({ clientId: "c", qos: 0 });
    online.clear();
    expect(groups.pickInRun(key, eligible, runs)).toBeNull();
    expect(runs.size).toBe(0);
  });
});
