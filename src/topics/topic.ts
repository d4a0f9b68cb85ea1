/**
 * Topic name / topic filter validation and the reference matcher.
 * Pure module: no platform imports.
 */

/** Broker-configured bounds applied to topic names and filters. */
export interface TopicLimits {
  /** Maximum UTF-8 encoded length of the whole topic or filter. */
  maxTopicBytes: number;
  /** Maximum number of `/`-separated levels. */
  maxTopicLevels: number;
  /**
   * Accept the control characters U+0001..U+001F and U+007F..U+009F, which the spec says a
   * string SHOULD NOT hold (§1.5.4); refused unless set (`ALLOW_CONTROL_CHARACTERS`).
   */
  allowControlCharacters?: boolean;
}

/** Why a topic name or filter was rejected. */
export type TopicError =
  | "empty"
  | "too-long"
  | "too-deep"
  | "wildcard"
  | "null-char"
  | "control-char"
  | "malformed-filter"
  | "invalid-utf8";

const SLASH = 0x2f;
const PLUS = 0x2b;
const HASH = 0x23;
const DOLLAR = 0x24;
const SHARE_PREFIX = "$share/";

/**
 * UTF-8 encoded byte length of `s` without allocating. A lone surrogate is
 * counted as 3 bytes (the length of its U+FFFD replacement).
 */
export function utf8ByteLength(s: string): number {
  let bytes = 0;
  const n = s.length;
  for (let i = 0; i < n; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) bytes += 1;
    else if (c < 0x800) bytes += 2;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < n) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        bytes += 4;
        i++;
      } else bytes += 3;
    } else bytes += 3;
  }
  return bytes;
}

/** True when `s` holds a control character §1.5.4 says a string SHOULD NOT hold: U+0001..U+001F, U+007F..U+009F. */
export function hasControlCharacter(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if ((c >= 0x01 && c <= 0x1f) || (c >= 0x7f && c <= 0x9f)) return true;
  }
  return false;
}

/**
 * Single pass over the whole string: well-formed UTF-16 (so it encodes to
 * well-formed UTF-8), no U+0000, no control character unless allowed, and byte
 * length within limits.
 */
function checkChars(s: string, limits: TopicLimits): TopicError | null {
  let bytes = 0;
  const n = s.length;
  const controls = limits.allowControlCharacters === true;
  for (let i = 0; i < n; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) {
      // [MQTT-1.5.3-2] UTF-8 strings must not contain U+0000.
      if (c === 0) return "null-char";
      // §1.5.4: U+0001..U+001F and U+007F SHOULD NOT appear.
      if (!controls && (c < 0x20 || c === 0x7f)) return "control-char";
      bytes += 1;
    } else if (c < 0x800) {
      // §1.5.4: nor U+0080..U+009F.
      if (!controls && c <= 0x9f) return "control-char";
      bytes += 2;
    } else if (c >= 0xd800 && c <= 0xdfff) {
      // [MQTT-1.5.3-1] surrogate code points are not valid in UTF-8: a lone
      // surrogate here could never have come off the wire as valid UTF-8.
      if (c > 0xdbff || i + 1 >= n) return "invalid-utf8";
      const d = s.charCodeAt(i + 1);
      if (d < 0xdc00 || d > 0xdfff) return "invalid-utf8";
      bytes += 4;
      i++;
    } else {
      bytes += 3;
    }
  }
  return bytes > limits.maxTopicBytes ? "too-long" : null;
}

/**
 * Validate a PUBLISH topic name.
 * @returns `null` when valid, otherwise the first problem found.
 */
export function validateTopicName(topic: string, limits: TopicLimits): TopicError | null {
  // [MQTT-4.7.3-1] topic names must be at least one character long.
  if (topic.length === 0) return "empty";
  const charErr = checkChars(topic, limits);
  if (charErr !== null) return charErr;
  let levels = 1;
  for (let i = 0; i < topic.length; i++) {
    const c = topic.charCodeAt(i);
    // [MQTT-3.3.2-2] the topic name in PUBLISH must not contain wildcards.
    if (c === PLUS || c === HASH) return "wildcard";
    if (c === SLASH) levels++;
  }
  return levels > limits.maxTopicLevels ? "too-deep" : null;
}

/** Wildcard placement and depth for a (non-shared) filter starting at `start`. */
function checkFilterStructure(f: string, start: number, limits: TopicLimits): TopicError | null {
  let levels = 1;
  let levelStart = start;
  const n = f.length;
  for (let i = start; i < n; i++) {
    const c = f.charCodeAt(i);
    if (c === SLASH) {
      levels++;
      levelStart = i + 1;
    } else if (c === HASH) {
      // [MQTT-4.7.1-2] `#` must occupy a whole level and be the last level.
      if (i !== levelStart || i + 1 !== n) return "malformed-filter";
    } else if (c === PLUS) {
      // [MQTT-4.7.1-3] `+` must occupy an entire level.
      if (i !== levelStart || (i + 1 < n && f.charCodeAt(i + 1) !== SLASH)) return "malformed-filter";
    }
  }
  return levels > limits.maxTopicLevels ? "too-deep" : null;
}

/**
 * Split a shared subscription filter `$share/<group>/<filter>`.
 * Does not validate the group or inner filter (see {@link validateTopicFilter}).
 * @returns `null` when `filter` is not a shared filter or has no `/` after the group.
 */
export function parseSharedFilter(filter: string): { group: string; filter: string } | null {
  if (!filter.startsWith(SHARE_PREFIX)) return null;
  const slash = filter.indexOf("/", SHARE_PREFIX.length);
  if (slash < 0) return null;
  return { group: filter.slice(SHARE_PREFIX.length, slash), filter: filter.slice(slash + 1) };
}

/**
 * Validate a SUBSCRIBE/UNSUBSCRIBE topic filter, including shared filters
 * (`$share/<group>/<filter>`). Length applies to the whole string; depth to
 * the effective (inner) filter.
 * @returns `null` when valid, otherwise the first problem found.
 */
export function validateTopicFilter(filter: string, limits: TopicLimits): TopicError | null {
  // [MQTT-4.7.3-1] topic filters must be at least one character long.
  if (filter.length === 0) return "empty";
  const charErr = checkChars(filter, limits);
  if (charErr !== null) return charErr;
  if (!filter.startsWith(SHARE_PREFIX)) return checkFilterStructure(filter, 0, limits);
  const slash = filter.indexOf("/", SHARE_PREFIX.length);
  // [MQTT-4.8.2-1] ShareName must be at least one character and is followed by `/` and a filter.
  // [MQTT-4.8.2-2] ShareName must not contain `/`, `+` or `#`.
  if (slash <= SHARE_PREFIX.length || slash + 1 >= filter.length) return "malformed-filter";
  for (let i = SHARE_PREFIX.length; i < slash; i++) {
    const c = filter.charCodeAt(i);
    if (c === PLUS || c === HASH) return "malformed-filter";
  }
  return checkFilterStructure(filter, slash + 1, limits);
}

/**
 * Reference matcher: does (non-shared) `filter` match topic name `topic`?
 * `+` matches exactly one level (possibly empty); `#` matches the parent
 * level and any number of child levels.
 */
export function topicMatches(filter: string, topic: string): boolean {
  // [MQTT-4.7.2-1] filters starting with a wildcard must not match topics starting with `$`.
  if (topic.charCodeAt(0) === DOLLAR) {
    const f0 = filter.charCodeAt(0);
    if (f0 === PLUS || f0 === HASH) return false;
  }
  const fl = filter.split("/");
  const tl = topic.split("/");
  for (let i = 0; i < fl.length; i++) {
    const f = fl[i];
    if (f === "#") return true;
    const t = tl[i];
    if (t === undefined) return false;
    if (f !== "+" && f !== t) return false;
  }
  return fl.length === tl.length;
}
