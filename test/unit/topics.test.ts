import { describe, it, expect } from "vitest";
import {
  parseSharedFilter,
  topicMatches,
  utf8ByteLength,
  validateTopicFilter,
  validateTopicName,
  type TopicError,
  type TopicLimits,
} from "../../src/topics/topic";
import { SubscriptionTrie } from "../../src/topics/trie";
import { mulberry32 } from "../helpers/random";

/** (filter, topic, expected) — shared by the naive matcher and the trie. */
const CASES: ReadonlyArray<readonly [string, string, boolean]> = [
  // exact
  ["a", "a", true],
  ["a/b/c", "a/b/c", true],
  ["a/b/c", "a/b", false],
  ["a/b", "a/b/c", false],
  ["a/b", "a/c", false],
  // case sensitivity
  ["A/b", "a/b", false],
  ["a/B", "a/B", true],
  // + at each position
  ["+", "a", true],
  ["+", "a/b", false],
  ["+/b/c", "a/b/c", true],
  ["a/+/c", "a/b/c", true],
  ["a/b/+", "a/b/c", true],
  ["a/+/c", "a/b/d", false],
  ["a/+", "a", false],
  ["+/+", "a/b", true],
  ["+/+", "a", false],
  ["+/+", "/", true],
  ["+/+", "/a", true],
  // # at root and as parent
  ["#", "a", true],
  ["#", "a/b/c", true],
  ["#", "/", true],
  ["a/#", "a", true],
  ["a/#", "a/b", true],
  ["a/#", "a/b/c", true],
  ["a/#", "ab", false],
  ["a/#", "b/a", false],
  ["a/b/#", "a", false],
  ["+/#", "a", true],
  ["+/#", "a/b/c", true],
  ["a/+/#", "a/b", true],
  ["a/+/#", "a", false],
  // empty levels
  ["a//b", "a//b", true],
  ["a/+/b", "a//b", true],
  ["a//b", "a/b", false],
  ["/a", "/a", true],
  ["+/a", "/a", true],
  ["/a", "a", false],
  ["/+", "/a", true],
  ["#", "/a", true],
  ["/#", "/a", true],
  ["/#", "/", true],
  // trailing slash
  ["a/", "a/", true],
  ["a/", "a", false],
  ["a", "a/", false],
  ["a/+", "a/", true],
  ["a/#", "a/", true],
  // $-topics
  ["#", "$SYS/x", false],
  ["+/x", "$SYS/x", false],
  ["+", "$SYS", false],
  ["$SYS/#", "$SYS/x", true],
  ["$SYS/#", "$SYS", true],
  ["$SYS/+", "$SYS", false],
  ["$SYS/+", "$SYS/x", true],
  ["$SYS/x", "$SYS/x", true],
  ["+/#", "$SYS/x", false],
  ["a/$x", "a/$x", true],
  ["a/+", "a/$x", true],
  ["a/#", "a/$x", true],
  // multi-byte UTF-8
  ["héllo/wörld", "héllo/wörld", true],
  ["héllo/+", "héllo/日本", true],
  ["日本/#", "日本/😀/x", true],
  ["+/😀", "日本/😀", true],
  ["+/😀", "日本/😁", false],
  ["hello", "héllo", false],
];

const FILTERS = [...new Set(CASES.map(([f]) => f))];
const TOPICS = [...new Set(CASES.map(([, t]) => t))];

function matchedFilters(trie: SubscriptionTrie<number>, topic: string): string[] {
  return trie
    .match(topic)
    .map((m) => m.filter)
    .sort();
}

describe("topicMatches / SubscriptionTrie case table", () => {
  it.each(CASES)("topicMatches(%j, %j) === %s", (filter, topic, expected) => {
    expect(topicMatches(filter, topic)).toBe(expected);
  });

  it.each(CASES)("single-filter trie %j vs %j === %s", (filter, topic, expected) => {
    const trie = new SubscriptionTrie<number>();
    trie.add(filter, "k", 1);
    const m = trie.match(topic);
    expect(m.length).toBe(expected ? 1 : 0);
    if (expected) expect(m[0]).toEqual({ key: "k", filter, value: 1 });
  });

  it("trie holding all table filters agrees with the naive matcher for every topic", () => {
    const trie = new SubscriptionTrie<number>();
    FILTERS.forEach((f, i) => expect(trie.add(f, `k${i}`, i)).toBe(true));
    expect(trie.size).toBe(FILTERS.length);
    for (const topic of TOPICS) {
      const expected = FILTERS.filter((f) => topicMatches(f, topic)).sort();
      expect(matchedFilters(trie, topic), topic).toEqual(expected);
    }
  });
});

describe("SubscriptionTrie", () => {
  it("add replaces per (filter, key), size counts entries", () => {
    const trie = new SubscriptionTrie<string>();
    expect(trie.add("a/+", "s1", "x")).toBe(true);
    expect(trie.add("a/+", "s1", "y")).toBe(false);
    expect(trie.add("a/+", "s2", "z")).toBe(true);
    expect(trie.add("a/#", "s1", "w")).toBe(true);
    expect(trie.size).toBe(3);
    const got = trie
      .match("a/b")
      .map((m) => `${m.filter}|${m.key}|${m.value}`)
      .sort();
    expect(got).toEqual(["a/#|s1|w", "a/+|s1|y", "a/+|s2|z"]);
  });

  it("remove prunes and returns false for missing entries", () => {
    const trie = new SubscriptionTrie<number>();
    trie.add("a/b/c", "s1", 1);
    trie.add("a/#", "s1", 2);
    trie.add("+/b", "s2", 3);
    expect(trie.remove("a/b/c", "s2")).toBe(false);
    expect(trie.remove("a/b/x", "s1")).toBe(false);
    expect(trie.remove("a/b", "s1")).toBe(false);
    expect(trie.remove("a/b/c", "s1")).toBe(true);
    expect(trie.remove("a/b/c", "s1")).toBe(false);
    expect(trie.match("a/b/c").map((m) => m.filter)).toEqual(["a/#"]);
    expect(trie.remove("a/#", "s1")).toBe(true);
    expect(trie.remove("+/b", "s2")).toBe(true);
    expect(trie.size).toBe(0);
    expect([...trie.entries()]).toEqual([]);
    expect(trie.match("a/b")).toEqual([]);
    // Reusable after being emptied.
    trie.add("a/b", "s3", 4);
    expect(trie.match("a/b")).toEqual([{ key: "s3", filter: "a/b", value: 4 }]);
  });

  it("entries() yields every entry once", () => {
    const trie = new SubscriptionTrie<number>();
    FILTERS.forEach((f, i) => {
      trie.add(f, "a", i);
      trie.add(f, "b", -i);
    });
    const all = [...trie.entries()].map((e) => `${e.filter}|${e.key}|${e.value}`).sort();
    const expected = FILTERS.flatMap((f, i) => [`${f}|a|${i}`, `${f}|b|${-i}`]).sort();
    expect(all).toEqual(expected);
    expect(trie.size).toBe(expected.length);
  });
});


describe("SubscriptionTrie randomized vs topicMatches", () => {
  const rand = mulberry32(0xc0ffee);
  const pick = <T,>(xs: readonly T[]): T => {
    const x = xs[Math.floor(rand() * xs.length)];
    if (x === undefined) throw new Error("empty pick");
    return x;
  };
  const LEVELS = ["a", "b", "c", "$x", ""] as const;
  const randTopic = (): string => {
    const n = 1 + Math.floor(rand() * 4);
    return Array.from({ length: n }, () => pick(LEVELS)).join("/");
  };
  const randFilter = (): string => {
    const n = 1 + Math.floor(rand() * 4);
    const parts: string[] = Array.from({ length: n }, () => (rand() < 0.3 ? "+" : pick(LEVELS)));
    if (rand() < 0.25) parts[n - 1] = "#";
    return parts.join("/");
  };

  const filters = Array.from({ length: 300 }, randFilter);
  const topics = Array.from({ length: 500 }, randTopic);

  const check = (trie: SubscriptionTrie<number>, live: Map<string, Set<string>>): number => {
    let hits = 0;
    for (const topic of topics) {
      const expected: string[] = [];
      for (const [f, keys] of live) if (topicMatches(f, topic)) for (const k of keys) expected.push(`${f}|${k}`);
      const got = trie.match(topic).map((m) => `${m.filter}|${m.key}`);
      expect(got.sort(), topic).toEqual(expected.sort());
      hits += got.length;
    }
    return hits;
  };

  it("match agrees with the naive matcher, before and after removals", () => {
    const trie = new SubscriptionTrie<number>();
    const live = new Map<string, Set<string>>();
    filters.forEach((f, i) => {
      const key = `s${i % 7}`;
      const keys = live.get(f) ?? new Set<string>();
      const isNew = !keys.has(key);
      keys.add(key);
      live.set(f, keys);
      expect(trie.add(f, key, i)).toBe(isNew);
    });
    const total = (): number => [...live.values()].reduce((n, s) => n + s.size, 0);
    expect(trie.size).toBe(total());
    // Guard against a degenerate generator: the comparison must exercise real matches.
    expect(check(trie, live)).toBeGreaterThan(1000);

    // Remove roughly half of the entries (plus some absent ones).
    for (const [f, keys] of [...live]) {
      for (const k of [...keys, "absent"]) {
        if (rand() < 0.5) {
          expect(trie.remove(f, k)).toBe(keys.delete(k));
        }
      }
      if (keys.size === 0) live.delete(f);
    }
    expect(trie.size).toBe(total());
    check(trie, live);

    // Remove the rest: trie must be empty.
    for (const [f, keys] of live) for (const k of keys) expect(trie.remove(f, k)).toBe(true);
    expect(trie.size).toBe(0);
    expect([...trie.entries()]).toEqual([]);
  });
});

const LIMITS: TopicLimits = { maxTopicBytes: 16, maxTopicLevels: 4 };
const BIG: TopicLimits = { maxTopicBytes: 65535, maxTopicLevels: 128 };

describe("validateTopicName", () => {
  const cases: ReadonlyArray<readonly [string, TopicLimits, TopicError | null]> = [
    ["a", LIMITS, null],
    ["a/b/c/d", LIMITS, null],
    ["/", LIMITS, null],
    ["a//b", LIMITS, null],
    ["$SYS/x", LIMITS, null],
    ["日本/😀", LIMITS, null],
    ["", LIMITS, "empty"],
    ["a/+", LIMITS, "wildcard"],
    ["a/#", LIMITS, "wildcard"],
    ["a+", LIMITS, "wildcard"],
    ["#", LIMITS, "wildcard"],
    ["a\u0000b", LIMITS, "null-char"],
    ["a\ud800b", LIMITS, "invalid-utf8"],
    ["a\udc00", LIMITS, "invalid-utf8"],
    ["a\ud800", LIMITS, "invalid-utf8"],
    ["\udc00\ud800", LIMITS, "invalid-utf8"],
    ["a/b/c/d/e", LIMITS, "too-deep"],
    ["////", LIMITS, "too-deep"],
    ["x".repeat(16), LIMITS, null],
    ["x".repeat(17), LIMITS, "too-long"],
    ["é".repeat(8), LIMITS, null],
    ["é".repeat(9), LIMITS, "too-long"],
    ["😀".repeat(4), LIMITS, null],
    ["😀".repeat(4) + "x", LIMITS, "too-long"],
    ["x".repeat(65535), BIG, null],
  ];
  it.each(cases)("validateTopicName(%j) === %s", (topic, limits, expected) => {
    expect(validateTopicName(topic, limits)).toBe(expected);
  });
});

describe("validateTopicFilter", () => {
  const cases: ReadonlyArray<readonly [string, TopicLimits, TopicError | null]> = [
    ["a", LIMITS, null],
    ["#", LIMITS, null],
    ["+", LIMITS, null],
    ["+/+", LIMITS, null],
    ["a/#", LIMITS, null],
    ["a/+/b", LIMITS, null],
    ["+/#", LIMITS, null],
    ["/", LIMITS, null],
    ["a//+", LIMITS, null],
    ["$SYS/#", LIMITS, null],
    ["", LIMITS, "empty"],
    ["a/#/b", LIMITS, "malformed-filter"],
    ["#/a", LIMITS, "malformed-filter"],
    ["a+", LIMITS, "malformed-filter"],
    ["+a", LIMITS, "malformed-filter"],
    ["#a", LIMITS, "malformed-filter"],
    ["a#", LIMITS, "malformed-filter"],
    ["a/+b", LIMITS, "malformed-filter"],
    ["a/b+/c", LIMITS, "malformed-filter"],
    ["##", LIMITS, "malformed-filter"],
    ["++", LIMITS, "malformed-filter"],
    ["a\u0000", LIMITS, "null-char"],
    ["a/\ud83d", LIMITS, "invalid-utf8"],
    ["a/\ude00/b", LIMITS, "invalid-utf8"],
    ["a/b/c/d", LIMITS, null],
    ["a/b/c/d/e", LIMITS, "too-deep"],
    ["+/+/+/#", LIMITS, null],
    ["+/+/+/+/#", LIMITS, "too-deep"],
    ["x".repeat(16), LIMITS, null],
    ["x".repeat(17), LIMITS, "too-long"],
    // shared subscriptions
    ["$share/g/#", LIMITS, null],
    ["$share/g/a/+", LIMITS, null],
    ["$share/g/a/b/c/d", BIG, null],
    ["$share/g//", LIMITS, null],
    ["$share//a", LIMITS, "malformed-filter"],
    ["$share/g", LIMITS, "malformed-filter"],
    ["$share/g/", LIMITS, "malformed-filter"],
    ["$share/", LIMITS, "malformed-filter"],
    ["$share/g+/a", LIMITS, "malformed-filter"],
    ["$share/#/a", LIMITS, "malformed-filter"],
    ["$share/+/a", LIMITS, "malformed-filter"],
    ["$share/g/a#", LIMITS, "malformed-filter"],
    ["$share/g/a/#/b", LIMITS, "malformed-filter"],
    ["$share/g/\u0000", LIMITS, "null-char"],
    ["$share/\ud800/a", LIMITS, "invalid-utf8"],
    ["$share/g/a/b/c/d", LIMITS, null], // depth counts the inner filter
    ["$share/g/a/b/c/d/e", BIG, null],
    ["$share/g/a/b/c/d/e", { maxTopicBytes: 100, maxTopicLevels: 4 }, "too-deep"],
    ["$share/g/0123456789", LIMITS, "too-long"], // length counts the whole string
    ["$sharex/a", LIMITS, null],
    ["$share", LIMITS, null],
  ];
  it.each(cases)("validateTopicFilter(%j) === %s", (filter, limits, expected) => {
    expect(validateTopicFilter(filter, limits)).toBe(expected);
  });
});

describe("parseSharedFilter", () => {
  it("splits shared filters and ignores others", () => {
    expect(parseSharedFilter("$share/g/a/+")).toEqual({ group: "g", filter: "a/+" });
    expect(parseSharedFilter("$share/grp/#")).toEqual({ group: "grp", filter: "#" });
    expect(parseSharedFilter("$share//a")).toEqual({ group: "", filter: "a" });
    expect(parseSharedFilter("$share/g")).toBeNull();
    expect(parseSharedFilter("a/b")).toBeNull();
    expect(parseSharedFilter("$sharex/a/b")).toBeNull();
    expect(parseSharedFilter("$SYS/a")).toBeNull();
  });
});

describe("utf8ByteLength", () => {
  it.each([
    ["", 0],
    ["abc", 3],
    ["é", 2],
    ["日本", 6],
    ["😀", 4],
    ["a😀é日", 10],
    ["\ud800", 3],
    ["\u0000", 1],
  ] as const)("utf8ByteLength(%j) === %i", (s, n) => {
    expect(utf8ByteLength(s)).toBe(n);
    expect(n).toBe(new TextEncoder().encode(s).length);
  });
});
