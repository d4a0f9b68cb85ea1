/**
 * Shared subscriptions (`$share/<group>/<filter>`): a group of sessions that take turns
 * receiving the messages matching one filter. Pure bookkeeping for the router: the trie
 * holds ONE entry per group (key `sharedKey(group, filter)`), whatever its member count,
 * so a publish to a group costs one match and one delivery.
 */
import type { QoS } from "./messages";

/** Trie key of a group. NUL cannot occur in a client id [MQTT-1.5.3-2], so it never collides with one. */
export function sharedKey(group: string, filter: string): string {
  return `\u0000${group}\u0000${filter}`;
}

export function isSharedKey(key: string): boolean {
  return key.startsWith("\u0000");
}

export interface SharedGroup {
  group: string;
  filter: string;
  /** clientId -> granted QoS, in join order. */
  members: Map<string, QoS>;
  /** Round-robin position. */
  next: number;
}

/**
 * The messages of one publish batch for a group go to a member in runs of at most this many,
 * then to the next member: a batch of a few messages costs one `deliver` call, as a fan-out
 * does, instead of one call per message; a burst still spreads over the members.
 */
export const SHARED_RUN = 16;

/** Per publish batch: each group's current run (its member and how many more it takes). */
export type SharedRuns = Map<string, { clientId: string; left: number }>;

export class SharedGroups {
  private readonly groups = new Map<string, SharedGroup>();

  get(key: string): SharedGroup | undefined {
    return this.groups.get(key);
  }

  /** Adds (or updates) a member; true when the group is new (the caller adds its trie entry). */
  join(group: string, filter: string, clientId: string, qos: QoS): boolean {
    const key = sharedKey(group, filter);
    let g = this.groups.get(key);
    const created = !g;
    if (!g) this.groups.set(key, (g = { group, filter, members: new Map(), next: 0 }));
    g.members.set(clientId, qos);
    return created;
  }

  /** Removes a member; true when the group is now empty (the caller removes its trie entry). */
  leave(group: string, filter: string, clientId: string): boolean {
    const key = sharedKey(group, filter);
    const g = this.groups.get(key);
    if (!g) return false;
    g.members.delete(clientId);
    if (g.members.size > 0) return false;
    this.groups.delete(key);
    return true;
  }

  /**
   * The next member in round-robin order that `eligible` accepts (online members), or null.
   * Round robin per group: each message goes to the member after the last one chosen.
   */
  pick(key: string, eligible: (clientId: string) => boolean, exclude?: string): { clientId: string; qos: QoS } | null {
    const g = this.groups.get(key);
    if (!g) return null;
    const members = [...g.members];
    for (let i = 0; i < members.length; i++) {
      const index = (g.next + i) % members.length;
      const entry = members[index];
      if (!entry) continue;
      const [clientId, qos] = entry;
      if (clientId === exclude || !eligible(clientId)) continue;
      g.next = index + 1;
      return { clientId, qos };
    }
    return null;
  }

  /**
   * {@link pick} within a publish batch: the member of the group's current run while it has
   * room, is still a member and still `eligible`; else the next member in round-robin order,
   * who starts a new run of {@link SHARED_RUN}.
   */
  pickInRun(key: string, eligible: (clientId: string) => boolean, runs: SharedRuns): { clientId: string; qos: QoS } | null {
    const run = runs.get(key);
    const qos = run ? this.groups.get(key)?.members.get(run.clientId) : undefined;
    if (run && run.left > 0 && qos !== undefined && eligible(run.clientId)) {
      run.left--;
      return { clientId: run.clientId, qos };
    }
    const member = this.pick(key, eligible);
    if (member) runs.set(key, { clientId: member.clientId, left: SHARED_RUN - 1 });
    else runs.delete(key);
    return member;
  }

  *entries(): IterableIterator<[string, SharedGroup]> {
    yield* this.groups;
  }

  /** The groups `clientId` belongs to. */
  keysOf(clientId: string): string[] {
    const keys: string[] = [];
    for (const [key, g] of this.groups) if (g.members.has(clientId)) keys.push(key);
    return keys;
  }
}
