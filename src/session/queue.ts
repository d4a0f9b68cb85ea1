/**
 * A session's offline queue in its object's storage: messages under `q:<seq>` for
 * head <= seq < tail, their sizes beside the bounds, appended durably, read and forgotten
 * from the head in pages bounded in bytes.
 */
import type { Limits } from "../config";
import { PAGE_BYTES, isMessage, messageBytes, type Message } from "../router/messages";
import { deleteKeys, putEntries } from "../storage";
import { QUEUE_PREFIX, queueKey } from "./keys";

/** The queue's bounds, kept in the session's meta. */
export interface QueueBounds {
  head: number;
  tail: number;
  /** Sizes (`messageBytes`) of the queued messages, head first; absent in sessions stored before the byte bound. */
  sizes?: number[];
}

/** Queue entries read per storage call when paging. */
const QUEUE_READ = 64;

/**
 * Writes messages at the tail, then forgets the oldest past the count bound
 * (MAX_QUEUED_MESSAGES) and the byte bound (MAX_QUEUED_BYTES); the newest always stays.
 * Returns what was dropped, or null. The caller saves the bounds.
 */
export async function appendToQueue(
  storage: DurableObjectStorage,
  q: QueueBounds,
  messages: Message[],
  limits: Pick<Limits, "maxQueuedMessages" | "maxQueuedBytes">,
): Promise<{ count: number; bound: "MAX_QUEUED_MESSAGES" | "MAX_QUEUED_BYTES" } | null> {
  // A session stored before the byte bound has no sizes: it starts counting from here.
  if (!q.sizes || q.sizes.length !== q.tail - q.head) q.sizes = new Array<number>(q.tail - q.head).fill(0);
  const entries: Array<[string, Message]> = [];
  for (const m of messages) {
    entries.push([queueKey(q.tail++), m]);
    q.sizes.push(messageBytes(m));
  }
  await putEntries(storage, entries);
  let bytes = q.sizes.reduce((a, b) => a + b, 0);
  let next = q.head;
  while (next < q.tail - 1 && (q.tail - next > limits.maxQueuedMessages || bytes > limits.maxQueuedBytes)) {
    bytes -= q.sizes[next - q.head] ?? 0;
    next++;
  }
  const count = next - q.head;
  if (count === 0) return null;
  const bound = q.tail - next >= limits.maxQueuedMessages ? "MAX_QUEUED_MESSAGES" : "MAX_QUEUED_BYTES";
  await dropQueueHead(storage, q, next);
  return { count, bound };
}

/**
 * The next page from the head, at most PAGE_BYTES (at least one message), and the sequence
 * number after it. Expired messages are skipped [MQTT-3.3.2-5].
 */
export async function readQueuePage(storage: DurableObjectStorage, q: QueueBounds): Promise<{ messages: Message[]; next: number }> {
  const map = await storage.list({ start: queueKey(q.head), end: queueKey(q.tail), limit: QUEUE_READ });
  const messages: Message[] = [];
  const now = Date.now();
  let bytes = 0;
  let next = q.head;
  for (const [key, value] of map) {
    if (isMessage(value)) {
      const size = messageBytes(value);
      if (messages.length > 0 && bytes + size > PAGE_BYTES) break;
      bytes += size;
      if (!(value.expiresAt !== undefined && value.expiresAt <= now)) messages.push(value);
    }
    next = Number(key.slice(QUEUE_PREFIX.length)) + 1;
  }
  // Keys missing in storage (a gap) still advance the head.
  if (map.size === 0) next = q.tail;
  return { messages, next };
}

/** Forgets the messages before `next` (delivered, or dropped). The caller saves the bounds. */
export async function dropQueueHead(storage: DurableObjectStorage, q: QueueBounds, next: number): Promise<void> {
  const keys: string[] = [];
  for (let s = q.head; s < next; s++) keys.push(queueKey(s));
  await deleteKeys(storage, keys);
  if (q.sizes) q.sizes.splice(0, next - q.head);
  q.head = next;
}
