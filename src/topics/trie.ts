/**
 * Subscription trie over topic levels, used by the router to find every
 * subscriber whose filter matches a published topic.
 * Pure module: no platform imports.
 */

/** Subscribers sharing one filter, keyed by subscriber key. */
interface Bucket<V> {
  filter: string;
  subs: Map<string, V>;
}

class Node<V> {
  children: Map<string, Node<V>> | null = null;
  plus: Node<V> | null = null;
  /** Filters ending exactly at this node. */
  exact: Bucket<V> | null = null;
  /** Filters ending with `#` directly below this node. */
  hash: Bucket<V> | null = null;

  isEmpty(): boolean {
    return (
      this.exact === null &&
      this.hash === null &&
      this.plus === null &&
      (this.children === null || this.children.size === 0)
    );
  }
}

/** One match / entry of the trie. */
export interface TrieEntry<V> {
  key: string;
  filter: string;
  value: V;
}

/**
 * A trie of (filter, key) → value. Filters must already be valid, non-shared
 * topic filters (see `validateTopicFilter`); a shared filter would be stored
 * and matched literally. Matching semantics are identical to `topicMatches`.
 */
export class SubscriptionTrie<V> {
  private readonly root = new Node<V>();
  private count = 0;

  /** Number of (filter, key) entries. */
  get size(): number {
    return this.count;
  }

  /**
   * Insert or replace the value for (filter, key).
   * @returns true if the entry is new, false if an existing value was replaced.
   */
  add(filter: string, key: string, value: V): boolean {
    const levels = filter.split("/");
    const last = levels.length - 1;
    const isHash = levels[last] === "#";
    const end = isHash ? last : levels.length;
    let node = this.root;
    for (let i = 0; i < end; i++) {
      const level = levels[i] ?? "";
      if (level === "+") {
        node = node.plus ??= new Node<V>();
      } else {
        const children = (node.children ??= new Map());
        let child = children.get(level);
        if (child === undefined) {
          child = new Node<V>();
          children.set(level, child);
        }
        node = child;
      }
    }
    let bucket: Bucket<V>;
    if (isHash) bucket = node.hash ??= { filter, subs: new Map() };
    else bucket = node.exact ??= { filter, subs: new Map() };
    const had = bucket.subs.has(key);
    bucket.subs.set(key, value);
    if (!had) this.count++;
    return !had;
  }

  /**
   * Remove the entry for (filter, key), pruning nodes left empty.
   * @returns true if an entry was removed.
   */
  remove(filter: string, key: string): boolean {
    const levels = filter.split("/");
    const last = levels.length - 1;
    const isHash = levels[last] === "#";
    const end = isHash ? last : levels.length;
    const path: Node<V>[] = [this.root];
    let node = this.root;
    for (let i = 0; i < end; i++) {
      const level = levels[i] ?? "";
      const next = level === "+" ? node.plus : (node.children?.get(level) ?? null);
      if (next === null) return false;
      node = next;
      path.push(node);
    }
    const bucket = isHash ? node.hash : node.exact;
    if (bucket === null || !bucket.subs.delete(key)) return false;
    this.count--;
    if (bucket.subs.size === 0) {
      if (isHash) node.hash = null;
      else node.exact = null;
    }
    // Prune bottom-up; path[i + 1] hangs off path[i] via levels[i].
    for (let i = end - 1; i >= 0; i--) {
      const child = path[i + 1];
      const parent = path[i];
      if (child === undefined || parent === undefined || !child.isEmpty()) break;
      const level = levels[i] ?? "";
      if (level === "+") parent.plus = null;
      else parent.children?.delete(level);
    }
    return true;
  }

  /** Every (filter, key) whose filter matches topic name `topic`. */
  match(topic: string): Array<TrieEntry<V>> {
    const out: Array<TrieEntry<V>> = [];
    const levels = topic.split("/");
    const root = this.root;
    // [MQTT-4.7.2-1] filters starting with a wildcard must not match topics starting with `$`.
    if (topic.charCodeAt(0) === 0x24) {
      const child = root.children?.get(levels[0] ?? "");
      if (child !== undefined) walk(child, levels, 1, out);
    } else {
      walk(root, levels, 0, out);
    }
    return out;
  }

  /** Iterate all (filter, key, value) entries. */
  *entries(): IterableIterator<TrieEntry<V>> {
    const stack: Node<V>[] = [this.root];
    for (let node = stack.pop(); node !== undefined; node = stack.pop()) {
      if (node.exact !== null) yield* bucketEntries(node.exact);
      if (node.hash !== null) yield* bucketEntries(node.hash);
      if (node.plus !== null) stack.push(node.plus);
      if (node.children !== null) for (const c of node.children.values()) stack.push(c);
    }
  }
}

function* bucketEntries<V>(b: Bucket<V>): IterableIterator<TrieEntry<V>> {
  for (const [key, value] of b.subs) yield { key, filter: b.filter, value };
}

function emit<V>(b: Bucket<V>, out: Array<TrieEntry<V>>): void {
  const filter = b.filter;
  for (const [key, value] of b.subs) out.push({ key, filter, value });
}

/** `node` represents the first `i` topic levels already consumed. */
function walk<V>(node: Node<V>, levels: string[], i: number, out: Array<TrieEntry<V>>): void {
  // `#` matches the parent level too, so it applies whether or not levels remain.
  if (node.hash !== null) emit(node.hash, out);
  if (i === levels.length) {
    if (node.exact !== null) emit(node.exact, out);
    return;
  }
  const level = levels[i] ?? "";
  const child = node.children?.get(level);
  if (child !== undefined) walk(child, levels, i + 1, out);
  if (node.plus !== null) walk(node.plus, levels, i + 1, out);
}
