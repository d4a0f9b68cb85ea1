/** Storage keys of the topic router, built in one place. */
export const KEY = {
  subscription: "s:",
  target: "t:",
  retained: "r:",
  groupQueue: "g:",
  /** The traffic counters' snapshot (counters.ts): one key. */
  counters: "c:counters",
} as const;

// NUL cannot appear in a client id or a filter [MQTT-1.5.3-2], so it separates them unambiguously.
export function subscriptionKey(clientId: string, filter: string): string {
  return `${KEY.subscription}${clientId}\u0000${filter}`;
}

export function parseSubscriptionKey(key: string): { clientId: string; filter: string } | null {
  const body = key.slice(KEY.subscription.length);
  const sep = body.indexOf("\u0000");
  if (sep < 0) return null;
  return { clientId: body.slice(0, sep), filter: body.slice(sep + 1) };
}

export function targetKey(clientId: string): string {
  return `${KEY.target}${clientId}`;
}

export function retainedKey(topic: string): string {
  return `${KEY.retained}${topic}`;
}

/** A shared group's queued message (the value names the group). */
export function groupQueueKey(seq: number): string {
  return `${KEY.groupQueue}${seq.toString().padStart(16, "0")}`;
}
