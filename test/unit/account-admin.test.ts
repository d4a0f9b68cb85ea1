import { describe, expect, it } from "vitest";
import { mergeRetainedPages, type RetainedShardPage } from "../../src/router/account-admin";

const page = (topics: string[], cursor: string | null): RetainedShardPage => ({ items: topics.map((topic) => ({ topic, qos: 0, bytes: 1 })), cursor });
const topics = (p: RetainedShardPage): string[] => p.items.map((i) => i.topic);

describe("mergeRetainedPages (retained pages across router shards)", () => {
  it("merges finished shards in topic order, cut at the limit", () => {
    const merged = mergeRetainedPages([page(["a/3", "a/1"].sort(), null), page(["a/2", "a/4"], null)], 3);
    expect(topics(merged)).toEqual(["a/1", "a/2", "a/3"]);
    expect(merged.cursor).toBe("a/3");
    const rest = mergeRetainedPages([page([], null), page(["a/4"], null)], 3);
    expect(rest).toEqual({ items: [{ topic: "a/4", qos: 0, bytes: 1 }], cursor: null });
  });

  it("never passes a shard that stopped early: its next items could come first", () => {
    // Shard 0 stopped at a/2 (its scan limit); shard 1 is done but has a/3 and a/5.
    const merged = mergeRetainedPages([page(["a/1", "a/2"], "a/2"), page(["a/3", "a/5"], null)], 10);
    expect(topics(merged)).toEqual(["a/1", "a/2"]);
    expect(merged.cursor).toBe("a/2");
    // A shard that stopped without an item still moves the cursor on.
    expect(mergeRetainedPages([page([], "a/7"), page([], null)], 10)).toEqual({ items: [], cursor: "a/7" });
  });

  it("walks every topic exactly once when pages are followed", () => {
    const shards = [["b/1", "b/4", "b/6"], ["b/2", "b/3", "b/5", "b/7"]];
    const read = (after: string | null, limit: number): RetainedShardPage[] =>
      shards.map((all) => {
        const rest = all.filter((t) => after === null || t > after);
        return page(rest.slice(0, limit), rest.length > limit ? (rest[limit - 1] ?? null) : null);
      });
    const seen: string[] = [];
    let cursor: string | null = null;
    let pages = 0;
    do {
      const merged = mergeRetainedPages(read(cursor, 2), 2);
      seen.push(...topics(merged));
      cursor = merged.cursor;
      pages++;
    } while (cursor !== null && pages < 20);
    expect(seen).toEqual(["b/1", "b/2", "b/3", "b/4", "b/5", "b/6", "b/7"]);
  });
});
