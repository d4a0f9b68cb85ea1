import { describe, it, expect } from "vitest";
import {
  ACCOUNT_WIDE_ACL,
  canPublish,
  canSubscribe,
  deviceAcl,
  filterCovers,
  validateAcl,
  type Acl,
} from "../../src/topics/acl";
import { topicMatches, validateTopicFilter } from "../../src/topics/topic";
import { mulberry32 as rng } from "../helpers/random";

/** (granted, requested, covered) */
const COVERS: ReadonlyArray<readonly [string, string, boolean]> = [
  // brief examples
  ["a/#", "a/+/c", true],
  ["a/#", "a/#", true],
  ["a/#", "a", true],
  ["a/+", "a/b", true],
  ["a/+", "a/#", false],
  ["a/+", "a/+/c", false],
  ["#", "+/x", true],
  ["#", "#", true],
  ["#", "$SYS/x", false],
  ["$SYS/mon/#", "$SYS/mon/+", true],
  ["+/x", "$SYS/x", false],
  ["#", "+/b", true],
  // equal filters
  ["a", "a", true],
  ["a/b/c", "a/b/c", true],
  ["+", "+", true],
  ["+/+", "+/+", true],
  ["a/+/c", "a/+/c", true],
  ["$SYS/#", "$SYS/#", true],
  ["/", "/", true],
  // literals
  ["a", "b", false],
  ["a/b", "a/c", false],
  ["A", "a", false],
  ["ab", "a", false],
  ["a", "ab", false],
  // deeper / shallower
  ["a/b", "a/b/c", false],
  ["a/b/c", "a/b", false],
  ["a", "a/b", false],
  ["a/b", "a", false],
  ["a/+", "a", false],
  ["a/+", "a/b/c", false],
  ["+", "a/b", false],
  ["+/+", "a", false],
  // `#` vs parent level
  ["a/b/#", "a/b", true],
  ["a/b/#", "a", false],
  ["a/b/#", "a/#", false],
  ["a/b", "a/b/#", false],
  ["a/+/#", "a", false],
  ["a/+/#", "a/b", true],
  ["a/+/#", "a/#", false],
  ["a/#", "a/b/c/d/e", true],
  ["#", "a", true],
  ["#", "a/b/c", true],
  ["#", "/", true],
  // `+` vs literal / `#`
  ["+", "a", true],
  ["a", "+", false],
  ["+/b", "a/b", true],
  ["a/b", "+/b", false],
  ["+/b", "+/b", true],
  ["+/b", "+/c", false],
  ["+", "#", false],
  // no topic has zero levels, so `+/#` matches exactly what `#` matches
  ["+/#", "#", true],
  ["+/#", "$share/g/#", false],
  ["+/+/#", "+/#", false],
  ["/+/#", "/#", true],
  ["+/+/#", "/#", true],
  ["a/+/#", "a/#", false],
  ["+/+/#", "+/+/#", true],
  ["+/#", "/#", true],
  ["a/+/#", "a/#", false],
  ["+/#", "a", true],
  ["+/#", "+", true],
  ["a/#", "+", false],
  ["a/#", "#", false],
  // empty levels
  ["+", "", true],
  ["a/+", "a/", true],
  ["a/", "a/+", false],
  ["/#", "/a/b", true],
  ["/#", "a", false],
  ["+/#", "/", true],
  // `$` rule
  ["+", "$SYS", false],
  ["+/#", "$SYS/x", false],
  ["$SYS", "$SYS", true],
  ["$SYS/+", "$SYS/x", true],
  ["$SYS/#", "$SYS", true],
  ["$SYS/#", "#", false],
  ["$SYS/#", "+/x", false],
  ["+", "+", true],
  ["a/$x", "a/$x", true],
  ["a/+", "a/$x", true],
  ["a/#", "a/$x/y", true],
  ["#", "a/$x", true],
];

describe("filterCovers table", () => {
  for (const [g, r, want] of COVERS) {
    it(`${g} ${want ? "covers" : "does not cover"} ${r}`, () => {
      expect(filterCovers(g, r)).toBe(want);
    });
  }
  it("has at least 40 rows", () => {
    expect(COVERS.length).toBeGreaterThanOrEqual(40);
  });
});

/** All strings of `depth` `/`-joined levels from `levels`. */
function joins(levels: readonly string[], depth: number): string[] {
  let out = [""];
  for (let d = 0; d < depth; d++) {
    const next: string[] = [];
    for (const prefix of out) for (const l of levels) next.push(d === 0 ? l : `${prefix}/${l}`);
    out = next;
  }
  return out;
}

/** Valid filters up to `maxDepth` levels: literals and `+` anywhere, `#` only last. */
function allFilters(literals: readonly string[], maxDepth: number): string[] {
  const out: string[] = [];
  for (let depth = 1; depth <= maxDepth; depth++) {
    for (const head of depth === 1 ? [""] : joins([...literals, "+"], depth - 1)) {
      for (const last of [...literals, "+", "#"]) out.push(depth === 1 ? last : `${head}/${last}`);
    }
  }
  return out.filter((f) => f.length > 0);
}

/** Topics up to `maxDepth` levels, excluding the (invalid) empty topic. */
function allTopics(levels: readonly string[], maxDepth: number): string[] {
  const out: string[] = [];
  for (let depth = 1; depth <= maxDepth; depth++) out.push(...joins(levels, depth));
  return out.filter((t) => t.length > 0);
}


// `z` is used by no filter: it witnesses "`+` is wider than any literal". Topics go one level
// deeper than filters so a `#` (or `a/+` vs `a/+/+`) difference always has a witness.
const LITERALS = ["a", "b", "$s", ""];
const TOPIC_LEVELS = [...LITERALS, "z"];
const LIMITS = { maxTopicBytes: 1024, maxTopicLevels: 64 };

function matchSets(filters: readonly string[], topics: readonly string[]): Map<string, Uint8Array> {
  const sets = new Map<string, Uint8Array>();
  for (const f of filters) {
    const bits = new Uint8Array(topics.length);
    for (let i = 0; i < topics.length; i++) bits[i] = topicMatches(f, topics[i] ?? "") ? 1 : 0;
    sets.set(f, bits);
  }
  return sets;
}

/** A topic matched by `r` but not by `g`, or null. */
function counterExample(g: Uint8Array, r: Uint8Array, topics: readonly string[]): string | null {
  for (let i = 0; i < topics.length; i++) if (r[i] === 1 && g[i] === 0) return topics[i] ?? "";
  return null;
}

describe("filterCovers brute force against topicMatches", () => {
  const filters = allFilters(LITERALS, 3);
  const topics = allTopics(TOPIC_LEVELS, 4);
  const sets = matchSets(filters, topics);

  it("generates valid filters", () => {
    expect(filters.length).toBeGreaterThan(150);
    for (const f of filters) expect(validateTopicFilter(f, LIMITS)).toBeNull();
  });

  it("every filter matches some topic of the universe", () => {
    for (const f of filters) expect(sets.get(f)?.includes(1), f).toBe(true);
  });

  it("covers iff no counter-example, for all pairs of filters up to depth 3", () => {
    let covered = 0;
    let pairs = 0;
    for (const g of filters) {
      const gs = sets.get(g);
      if (!gs) throw new Error(g);
      for (const r of filters) {
        const rs = sets.get(r);
        if (!rs) throw new Error(r);
        const witness = counterExample(gs, rs, topics);
        const got = filterCovers(g, r);
        if (got !== (witness === null)) {
          expect.fail(`filterCovers(${JSON.stringify(g)}, ${JSON.stringify(r)}) = ${got}, counter-example ${JSON.stringify(witness)}`);
        }
        pairs++;
        if (got) covered++;
      }
    }
    // Both outcomes are well represented.
    expect(pairs).toBeGreaterThan(20_000);
    expect(covered).toBeGreaterThan(500);
  });

  it("covers iff no counter-example, for 400 seeded-random pairs up to depth 4 (topics to depth 5)", () => {
    const deep = allFilters(LITERALS, 4);
    const deepTopics = allTopics(TOPIC_LEVELS, 5);
    const next = rng(0x5eed);
    const pick = (): string => deep[Math.floor(next() * deep.length)] ?? "#";
    let covered = 0;
    for (let n = 0; n < 400; n++) {
      const g = pick();
      // Every few pairs derive r from g so that "covered" cases are not too rare.
      const r = n % 3 === 0 ? g.replace(/\+/g, "a") : pick();
      const [gs, rs] = [matchSets([g], deepTopics).get(g), matchSets([r], deepTopics).get(r)];
      if (!gs || !rs) throw new Error("no sets");
      const witness = counterExample(gs, rs, deepTopics);
      expect(filterCovers(g, r), `${g} vs ${r}: ${String(witness)}`).toBe(witness === null);
      if (witness === null) covered++;
    }
    expect(covered).toBeGreaterThan(50);
    // A hang guard, not a speed check: the brute force takes ~1 s alone, several on a loaded machine.
  }, 60_000);

  it("filterCovers(filter, topic) equals topicMatches(filter, topic)", () => {
    for (const f of filters) {
      for (const t of topics) {
        if (filterCovers(f, t) !== topicMatches(f, t)) expect.fail(`${f} vs ${t}`);
      }
    }
  });

  it("canSubscribe on $share/g/<r> equals canSubscribe on <r>", () => {
    const next = rng(42);
    const pick = (): string => filters[Math.floor(next() * filters.length)] ?? "#";
    for (let n = 0; n < 300; n++) {
      const acl: Acl = { pub: [], sub: [pick(), pick()] };
      const r = pick();
      expect(canSubscribe(acl, `$share/grp/${r}`), r).toBe(canSubscribe(acl, r));
    }
  });
});

describe("deviceAcl", () => {
  const acl = deviceAcl("acc1", "dev1");
  const own = "xi/blue/v1/acc1/d/dev1";

  it("grants only the device's own prefix", () => {
    expect(acl).toEqual({ pub: [`${own}/#`], sub: [`${own}/#`] });
  });

  it("allows publishing under its own prefix (and the bare prefix)", () => {
    expect(canPublish(acl, `${own}/temp`)).toBe(true);
    expect(canPublish(acl, `${own}/a/b/c`)).toBe(true);
    expect(canPublish(acl, `${own}/`)).toBe(true);
    expect(canPublish(acl, own)).toBe(true);
  });

  it("denies publishing elsewhere", () => {
    expect(canPublish(acl, "xi/blue/v1/acc1/d/dev2/temp")).toBe(false);
    expect(canPublish(acl, "xi/blue/v1/acc1/d/dev10/temp")).toBe(false);
    expect(canPublish(acl, "xi/blue/v1/acc1/d/dev/temp")).toBe(false);
    expect(canPublish(acl, "xi/blue/v1/acc2/d/dev1/temp")).toBe(false);
    expect(canPublish(acl, "xi/blue/v1/acc1/d")).toBe(false);
    expect(canPublish(acl, "other")).toBe(false);
    expect(canPublish(acl, "$SYS/x")).toBe(false);
  });

  it("allows subscribing within its own prefix", () => {
    expect(canSubscribe(acl, `${own}/#`)).toBe(true);
    expect(canSubscribe(acl, `${own}/cmd`)).toBe(true);
    expect(canSubscribe(acl, `${own}/+`)).toBe(true);
    expect(canSubscribe(acl, `${own}/+/x/#`)).toBe(true);
    expect(canSubscribe(acl, own)).toBe(true);
    expect(canSubscribe(acl, `$share/g/${own}/cmd`)).toBe(true);
  });

  it("denies subscribing beyond its own prefix", () => {
    expect(canSubscribe(acl, "#")).toBe(false);
    expect(canSubscribe(acl, "+/#")).toBe(false);
    expect(canSubscribe(acl, "xi/blue/v1/acc1/#")).toBe(false);
    expect(canSubscribe(acl, "xi/blue/v1/acc1/d/+/cmd")).toBe(false);
    expect(canSubscribe(acl, "xi/blue/v1/acc1/d/dev2/#")).toBe(false);
    expect(canSubscribe(acl, "xi/blue/v1/acc2/d/dev1/#")).toBe(false);
    expect(canSubscribe(acl, "xi/blue/v1/+/d/dev1/#")).toBe(false);
    expect(canSubscribe(acl, "$share/g/#")).toBe(false);
    expect(canSubscribe(acl, "$share/g/xi/blue/v1/acc1/d/dev2/cmd")).toBe(false);
  });
});

describe("ACCOUNT_WIDE_ACL", () => {
  it("allows every non-$ topic and filter", () => {
    expect(canPublish(ACCOUNT_WIDE_ACL, "a")).toBe(true);
    expect(canPublish(ACCOUNT_WIDE_ACL, "xi/blue/v1/acc/d/dev/x")).toBe(true);
    expect(canSubscribe(ACCOUNT_WIDE_ACL, "#")).toBe(true);
    expect(canSubscribe(ACCOUNT_WIDE_ACL, "+/+/#")).toBe(true);
    expect(canSubscribe(ACCOUNT_WIDE_ACL, "$share/g/#")).toBe(true);
  });

  it("denies $-topics", () => {
    expect(canPublish(ACCOUNT_WIDE_ACL, "$SYS/x")).toBe(false);
    expect(canSubscribe(ACCOUNT_WIDE_ACL, "$SYS/#")).toBe(false);
    expect(canSubscribe(ACCOUNT_WIDE_ACL, "$SYS/+")).toBe(false);
    expect(canSubscribe(ACCOUNT_WIDE_ACL, "$share/g/$SYS/#")).toBe(false);
  });

  it("is frozen", () => {
    expect(Object.isFrozen(ACCOUNT_WIDE_ACL)).toBe(true);
    expect(Object.isFrozen(ACCOUNT_WIDE_ACL.pub)).toBe(true);
    expect(Object.isFrozen(ACCOUNT_WIDE_ACL.sub)).toBe(true);
  });
});

describe("canPublish / canSubscribe with explicit grants", () => {
  const acl: Acl = { pub: ["cmd/+", "$SYS/mon/#"], sub: ["tele/#", "$SYS/mon/#", "x/+/y"] };

  it("checks publish against every pub filter", () => {
    expect(canPublish(acl, "cmd/1")).toBe(true);
    expect(canPublish(acl, "cmd/1/2")).toBe(false);
    expect(canPublish(acl, "$SYS/mon/load")).toBe(true);
    expect(canPublish(acl, "tele/1")).toBe(false);
  });

  it("checks subscribe coverage against every sub filter", () => {
    expect(canSubscribe(acl, "tele/#")).toBe(true);
    expect(canSubscribe(acl, "$SYS/mon/+")).toBe(true);
    expect(canSubscribe(acl, "$SYS/#")).toBe(false);
    expect(canSubscribe(acl, "x/+/y")).toBe(true);
    expect(canSubscribe(acl, "x/a/y")).toBe(true);
    expect(canSubscribe(acl, "x/#")).toBe(false);
    expect(canSubscribe(acl, "$share/workers/x/+/y")).toBe(true);
    expect(canSubscribe(acl, "$share/workers/x/#")).toBe(false);
    expect(canSubscribe(acl, "$share/workers/$SYS/mon/cpu")).toBe(true);
  });

  it("denies everything with an empty ACL", () => {
    const none: Acl = { pub: [], sub: [] };
    expect(canPublish(none, "a")).toBe(false);
    expect(canSubscribe(none, "a")).toBe(false);
  });

  it("denies a malformed shared filter", () => {
    expect(canSubscribe(ACCOUNT_WIDE_ACL, "$share/g")).toBe(false);
  });
});

describe("validateAcl", () => {
  it("accepts well-formed claims", () => {
    expect(validateAcl({ pub: ["a/#"], sub: ["+/b", "$SYS/#"] })).toEqual({ pub: ["a/#"], sub: ["+/b", "$SYS/#"] });
    expect(validateAcl({ pub: [], sub: [] })).toEqual({ pub: [], sub: [] });
    expect(validateAcl({ pub: ["a"], extra: 1 })).toEqual({ pub: ["a"], sub: [] });
  });

  it("treats a missing list as empty", () => {
    expect(validateAcl({ pub: ["a"] })).toEqual({ pub: ["a"], sub: [] });
    expect(validateAcl({ sub: ["a"] })).toEqual({ pub: [], sub: ["a"] });
    expect(validateAcl({})).toEqual({ pub: [], sub: [] });
  });

  it("returns fresh arrays", () => {
    const pub = ["a"];
    const acl = validateAcl({ pub });
    expect(acl?.pub).not.toBe(pub);
  });

  it("rejects non-objects", () => {
    for (const v of [null, undefined, 1, "a/#", true, [], [["a"]]]) expect(validateAcl(v), String(v)).toBeNull();
  });

  it("rejects lists that are not arrays of strings", () => {
    expect(validateAcl({ pub: "a/#" })).toBeNull();
    expect(validateAcl({ pub: null })).toBeNull();
    expect(validateAcl({ sub: [1] })).toBeNull();
    expect(validateAcl({ sub: ["a", null] })).toBeNull();
    expect(validateAcl({ pub: { 0: "a", length: 1 } })).toBeNull();
    expect(validateAcl({ pub: ["a", , "b"] })).toBeNull();
  });

  it("rejects invalid filters", () => {
    expect(validateAcl({ pub: [""] })).toBeNull();
    expect(validateAcl({ pub: ["a/#/b"] })).toBeNull();
    expect(validateAcl({ sub: ["a+"] })).toBeNull();
    expect(validateAcl({ sub: ["a/b#"] })).toBeNull();
    expect(validateAcl({ sub: ["a\u0000b"] })).toBeNull();
    expect(validateAcl({ sub: ["\ud800"] })).toBeNull();
    expect(validateAcl({ sub: ["$share/g/a"] })).toBeNull();
  });

  it("enforces size limits", () => {
    expect(validateAcl({ pub: Array.from({ length: 100 }, (_, i) => `t/${i}`) })?.pub.length).toBe(100);
    expect(validateAcl({ pub: Array.from({ length: 101 }, (_, i) => `t/${i}`) })).toBeNull();
    expect(validateAcl({ sub: ["x".repeat(1024)] })).not.toBeNull();
    expect(validateAcl({ sub: ["x".repeat(1025)] })).toBeNull();
    expect(validateAcl({ sub: [Array(64).fill("a").join("/")] })).not.toBeNull();
    expect(validateAcl({ sub: [Array(65).fill("a").join("/")] })).toBeNull();
  });
});
