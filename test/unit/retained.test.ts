import { describe, it, expect } from "vitest";
import { monitorIds, prefixRange } from "../../src/router/retained";
import { topicMatches } from "../../src/topics/topic";

const P = "$SYS/mon/";
const ids = ["", "a", "a/b", "b", "c0", "dev1", "dev1/x", "z", "\u00e9t\u00e9", "~"];

/** Whether the client id bounds keep `id`. */
function within(b: NonNullable<ReturnType<typeof monitorIds>>, id: string): boolean {
  if (b.after !== undefined && !(id > b.after)) return false;
  if (b.from !== undefined && !(id >= b.from)) return false;
  if (b.below !== undefined && !(id < b.below)) return false;
  return true;
}

describe("monitorIds: which presences a retained read of a `$` filter must look at", () => {
  it("keeps every `$SYS/mon/<id>` topic the filter's range holds after the read position (a superset is enough)", () => {
    const filters = ["$SYS/#", "$SYS/+/dev1", "$SYS/mon/#", "$SYS/mon/+", "$SYS/mon/dev1/#", "$SYS/mon/a/+", "$SYS/mo/#", "$T/#", "$SYS/mon0/#"];
    const afters = ["", "$SYS", "$SYS/mon/", "$SYS/mon/a", "$SYS/mon/dev1", "$SYS/mon/zz", "$SYS/mon0", "$T"];
    for (const filter of filters) {
      const range = prefixRange(filter);
      for (const after of afters) {
        const bounds = monitorIds(range, after);
        for (const id of ids) {
          const topic = `${P}${id}`;
          const inRange = (after >= range.lo ? topic > after : topic >= range.lo) && (range.hi === undefined || topic < range.hi);
          if (!inRange || !topicMatches(filter, topic)) continue;
          expect(bounds, `${filter} after "${after}" must read ${topic}`).not.toBeNull();
          if (bounds) expect(within(bounds, id), `${filter} after "${after}" must keep ${id}`).toBe(true);
        }
      }
    }
  });

  it("reads none where the range holds no monitor topic, and narrows to the id prefix where it can", () => {
    expect(monitorIds(prefixRange("$T/#"), "")).toBeNull();
    expect(monitorIds(prefixRange("$SYS/mo/#"), "")).toBeNull();
    expect(monitorIds(prefixRange("$SYS/mon0/#"), "")).toBeNull();
    expect(monitorIds(prefixRange("$SYS/#"), "$SYS/mon0")).toBeNull();
    expect(monitorIds(prefixRange("$SYS/mon/#"), "")).toEqual({});
    expect(monitorIds(prefixRange("$SYS/mon/dev1/#"), "")).toEqual({ from: "dev1", below: "dev10" });
    expect(monitorIds(prefixRange("$SYS/mon/+"), "$SYS/mon/dev1")).toEqual({ after: "dev1" });
  });
});
