import { describe, it, expect } from "vitest";
import { shardName, shardOfTopic, shardsOfFilter } from "../../src/router/shards";

const XI = { shards: 16, level: 5 };

describe("shard selection", () => {
  it("keys on the device level of xi/blue/v1/<account>/d/<device>/…; a shorter topic goes to shard 0", () => {
    const a = shardOfTopic("xi/blue/v1/acc/d/dev-1/tel", XI);
    expect(shardOfTopic("xi/blue/v1/acc/d/dev-1/cmd/x", XI)).toBe(a);
    expect(shardOfTopic("xi/blue/v1/acc/d/dev-1", XI)).toBe(a);
    expect(shardOfTopic("$SYS/mon/client", XI)).toBe(0);
    const spread = new Set(Array.from({ length: 200 }, (_, i) => shardOfTopic(`xi/blue/v1/acc/d/dev-${i}/tel`, XI)));
    expect(spread.size).toBe(16);
    expect(shardOfTopic("anything/at/all/x/y/z", { shards: 1, level: 5 })).toBe(0);
  });

  it("a filter fixing the key lives on one shard, the same as the topics it matches; a wildcard at or above the key means every shard", () => {
    const dev = shardOfTopic("xi/blue/v1/acc/d/dev-1/tel", XI);
    expect(shardsOfFilter("xi/blue/v1/acc/d/dev-1/#", XI)).toEqual([dev]);
    expect(shardsOfFilter("xi/blue/v1/acc/d/dev-1/+/x", XI)).toEqual([dev]);
    expect(shardsOfFilter("xi/blue/v1/acc/d/dev-1", XI)).toEqual([dev]);
    expect(shardsOfFilter("xi/blue/v1/acc/d/+/tel", XI)).toHaveLength(16);
    expect(shardsOfFilter("xi/blue/v1/acc/#", XI)).toHaveLength(16);
    expect(shardsOfFilter("#", XI)).toHaveLength(16);
    expect(shardsOfFilter("$SYS/mon/+", XI)).toHaveLength(16);
    expect(shardsOfFilter("$SYS/mon/client", XI)).toEqual([0]);
    expect(shardsOfFilter("$share/g/xi/blue/v1/acc/d/dev-1/#", XI)).toEqual([dev]);
  });

  it("shard 0 keeps the unsharded router's object name", () => {
    expect(shardName("acc", 0)).toBe("acc");
    expect(shardName("acc", 3)).toBe("acc\u0000shard\u00003");
  });
});
