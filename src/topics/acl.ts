/**
 * Topic ACLs: which topics an identity may publish to and which filters it may
 * subscribe with. Pure module; matching walks the strings by index so the
 * PUBLISH / SUBSCRIBE checks allocate nothing.
 */
import { validateTopicFilter, type TopicLimits } from "./topic";

/** Publish and subscribe grants, each a list of topic filters (within the identity's account). */
export interface Acl {
  /** A topic may be published when some filter here matches it. */
  pub: string[];
  /** A filter may be subscribed when some filter here covers it (see {@link filterCovers}). */
  sub: string[];
}

const SLASH = 0x2f;
const PLUS = 0x2b;
const HASH = 0x23;
const DOLLAR = 0x24;
const SHARE_PREFIX = "$share/";

/**
 * The ACL of a provisioned device: only its own `xi/blue/v1/<accountId>/d/<deviceId>/…`.
 * The trailing `#` also matches the bare prefix `xi/blue/v1/<accountId>/d/<deviceId>`
 * (MQTT: `#` includes the parent level). That topic is still inside the device's own
 * namespace, so it is deliberately allowed rather than special-cased away.
 */
export function deviceAcl(accountId: string, deviceId: string): Acl {
  const own = `xi/blue/v1/${accountId}/d/${deviceId}/#`;
  return { pub: [own], sub: [own] };
}

const ALL_PUB: string[] = ["#"];
const ALL_SUB: string[] = ["#"];
// Shared by every JWT identity without an `acl` claim: a stray push must throw, not widen others' grants.
Object.freeze(ALL_PUB);
Object.freeze(ALL_SUB);

/**
 * Default ACL for JWT identities without an `acl` claim: the whole account.
 * `#` never matches `$`-topics, so e.g. `$SYS/…` needs an explicit grant. Frozen.
 */
export const ACCOUNT_WIDE_ACL: Acl = Object.freeze({ pub: ALL_PUB, sub: ALL_SUB });

/** Index one past the end of the level starting at `p`. */
function levelEnd(s: string, p: number): number {
  const e = s.indexOf("/", p);
  return e < 0 ? s.length : e;
}

/** Is the level before `rp` in a filter starting at `start` absent or the sole, empty, first level? */
function emptyParent(s: string, rp: number, start: number): boolean {
  return rp === start || (rp === start + 1 && s.charCodeAt(start) === SLASH);
}

/** Is the rest of `s` from `p` exactly `+/#`? */
function isPlusHash(s: string, p: number): boolean {
  return s.length === p + 3 && s.charCodeAt(p) === PLUS && s.charCodeAt(p + 1) === SLASH && s.charCodeAt(p + 2) === HASH;
}

/**
 * Core of {@link filterCovers}, with the requested filter starting at `start` (so a
 * `$share/<group>/` prefix can be skipped without slicing). `granted` is not shared.
 */
function coversFrom(granted: string, requested: string, start: number): boolean {
  let rp = start;
  const g0 = granted.charCodeAt(0);
  // [MQTT-4.7.2-1] a granted filter starting with a wildcard matches no `$` topic, and a
  // requested filter whose first level starts with `$` matches only `$` topics. Wildcards in
  // valid filters always fill a whole level, so the first character decides.
  if (requested.charCodeAt(start) === DOLLAR && (g0 === PLUS || g0 === HASH)) return false;
  const gn = granted.length;
  const rn = requested.length;
  let gp = 0;
  for (;;) {
    const ge = levelEnd(granted, gp);
    const gLen = ge - gp;
    // `#` covers this level (as a parent) and everything below, whatever remains of requested.
    if (gLen === 1 && granted.charCodeAt(gp) === HASH) return true;
    // Requested ended one level earlier than granted can match.
    if (rp > rn) return false;
    const re = levelEnd(requested, rp);
    const rLen = re - rp;
    if (rLen === 1) {
      const rc = requested.charCodeAt(rp);
      // Requested `#` reaches its parent level and arbitrarily deep; a granted `#` (above) covers
      // that, and a granted `+/#` does too when the parent would be the empty topic, which cannot
      // exist [MQTT-4.7.3-1]: `#` ≡ `+/#` and `/#` ≡ `/+/#`.
      if (rc === HASH) return emptyParent(requested, rp, start) && isPlusHash(granted, gp);
      if (rc === PLUS && !(gLen === 1 && granted.charCodeAt(gp) === PLUS)) return false;
    }
    if (!(gLen === 1 && granted.charCodeAt(gp) === PLUS)) {
      if (gLen !== rLen) return false;
      for (let i = 0; i < gLen; i++) {
        if (granted.charCodeAt(gp + i) !== requested.charCodeAt(rp + i)) return false;
      }
    }
    gp = ge + 1;
    rp = re + 1;
    // Granted ended: covered only if requested ended at the same level.
    if (gp > gn) return rp > rn;
  }
}

/**
 * Does `granted` cover `requested`: is every topic that `requested` can match also
 * matched by `granted`? Both are valid, non-shared topic filters. A topic name (no
 * wildcards) is a filter matching only itself, so `filterCovers(f, topic)` equals
 * `topicMatches(f, topic)`.
 */
export function filterCovers(granted: string, requested: string): boolean {
  return coversFrom(granted, requested, 0);
}

/**
 * May an identity with `acl` publish to `topic`? `topic` must already be a valid topic
 * name (no wildcards).
 */
export function canPublish(acl: Acl, topic: string): boolean {
  for (const f of acl.pub) {
    if (coversFrom(f, topic, 0)) return true;
  }
  return false;
}

/**
 * May an identity with `acl` subscribe with `filter`? Allowed when some granted sub
 * filter covers it; for `$share/<group>/<f>` the inner `f` is checked. `filter` must
 * already be valid per `validateTopicFilter`.
 */
export function canSubscribe(acl: Acl, filter: string): boolean {
  let start = 0;
  if (filter.startsWith(SHARE_PREFIX)) {
    const slash = filter.indexOf("/", SHARE_PREFIX.length);
    if (slash < 0) return false;
    start = slash + 1;
  }
  for (const f of acl.sub) {
    if (coversFrom(f, filter, start)) return true;
  }
  return false;
}

/** Bounds for filters inside an `acl` claim: generous, independent of the broker's client limits. */
const ACL_FILTER_LIMITS: TopicLimits = { maxTopicBytes: 1024, maxTopicLevels: 64 };
const MAX_ACL_ENTRIES = 100;

/** A list of valid grant filters (copied), or null. `undefined` (claim member absent) is an empty list. */
function validateFilterList(value: unknown): string[] | null {
  if (value === undefined) return [];
  if (!Array.isArray(value) || value.length > MAX_ACL_ENTRIES) return null;
  const out: string[] = [];
  for (let i = 0; i < value.length; i++) {
    const f: unknown = value[i];
    if (typeof f !== "string" || validateTopicFilter(f, ACL_FILTER_LIMITS) !== null) return null;
    // A grant names topics; a `$share/…` grant would be matched literally and grant nothing useful,
    // so reject it as a malformed claim rather than silently ignore it.
    if (f.startsWith(SHARE_PREFIX)) return null;
    out.push(f);
  }
  return out;
}

/**
 * Guard for a token's `acl` claim: an object with optional `pub` and `sub` arrays of
 * topic filters (≤ 100 each, each ≤ 1024 bytes / 64 levels, no `$share/` grants).
 * A missing `pub` or `sub` is an empty list (no grant).
 * @returns a fresh {@link Acl}, or `null` when malformed.
 */
export function validateAcl(value: unknown): Acl | null {
  if (typeof value !== "object" || value === null || Array.isArray(value)) return null;
  const pub = validateFilterList("pub" in value ? value.pub : undefined);
  if (pub === null) return null;
  const sub = validateFilterList("sub" in value ? value.sub : undefined);
  if (sub === null) return null;
  return { pub, sub };
}
