/**
 * Retained messages on SUBSCRIBE [MQTT-3.3.1-6], in pages: the router answers SUBSCRIBE with
 * the first page and a cursor, and this connection reads the next pages one at a time. QoS 0
 * pages go straight out; QoS 1/2 ones join the outbox. A page holds at most half of
 * MAX_OUTBOX_MESSAGES, and the next is read only while it fits beside what waits for the
 * in-flight window, so a large retained set never overflows the outbox: the client's
 * acknowledgements resume a paused delivery (`acks.ts`). Nothing that grows with
 * the account's retained set travels in one call or sits in memory.
 */
import { PAGE_BYTES, type Message, type RetainedCursor } from "../../router/messages";
import { errorMessage, log } from "../../log";
import type { Limits } from "../../config";
import type { Link } from "../link";
import { deliverMessages } from "./deliver";

/** Delivers a SUBSCRIBE's first page of retained messages, then the rest while there is room. */
export async function deliverRetained(link: Link, first: Message[], more: RetainedCursor | null): Promise<void> {
  if (first.length > 0) await deliverMessages(link, first);
  if (!more) return;
  (await link.state.retained.load()).push(more);
  await pump(link);
}

/** After an acknowledgement: a paused retained delivery goes on once the outbox has room again. */
export async function resumeRetained(link: Link): Promise<void> {
  if (link.state.retained.idle || !hasRoom(link)) return;
  if ((await link.state.retained.load()).length > 0) await pump(link);
}

async function pump(link: Link): Promise<void> {
  const { retained } = link.state;
  if (retained.running) return;
  retained.running = true;
  const pending = await retained.load();
  try {
    const router = link.services.router(link.att().account);
    while (pending.length > 0 && !link.state.closing && hasRoom(link)) {
      const cursor = pending[0];
      if (!cursor) break;
      const page = await router.retainedPage(cursor);
      if (page.more) pending[0] = page.more;
      else pending.shift();
      if (page.messages.length > 0) await deliverMessages(link, page.messages);
    }
  } catch (err) {
    // The subscription stands; what was not read stays, and the next acknowledgement tries again.
    log("warn", "mqtt.retained_page_failed", { clientId: link.att().clientId, error: errorMessage(err) });
  } finally {
    retained.running = false;
  }
  // A connection that is closing keeps nothing (its teardown clears the storage).
  if (!link.state.closing) await retained.save();
}

/** Messages per retained page: half the outbox bound. */
export function retainedPageMessages(limits: Limits): number {
  return Math.max(1, Math.floor(limits.maxOutboxMessages / 2));
}

/**
 * Whether the next page fits beside what waits for the window, in count (MAX_OUTBOX_MESSAGES) and
 * in bytes (MAX_QUEUED_BYTES; a page holds at most PAGE_BYTES): past either bound the outbox drops
 * its oldest waiting messages, so the reading pauses instead. With nothing waiting a page always goes.
 */
function hasRoom(link: Link): boolean {
  const limits = link.config.limits;
  const outbox = link.state.outbox;
  if (outbox.waiting() + retainedPageMessages(limits) > limits.maxOutboxMessages) return false;
  const bytes = outbox.waitingBytes();
  return bytes === 0 || bytes + PAGE_BYTES <= limits.maxQueuedBytes;
}
