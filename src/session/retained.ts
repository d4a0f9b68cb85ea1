import type { RetainedCursor } from "../router/messages";
import { RETAINED_KEY } from "./keys";

/**
 * Retained deliveries on subscribe that still have pages to read (`handlers/retained.ts`),
 * oldest first. In memory while the delivery runs; in storage only while it is paused for
 * the client's acknowledgements (so it survives hibernation).
 */
export class PendingRetained {
  /** null = not loaded since the last wake. */
  private cursors: RetainedCursor[] | null = null;
  private stored = false;
  /** A delivery is reading pages now (one at a time per connection). */
  running = false;

  constructor(private readonly storage: DurableObjectStorage) {}

  async load(): Promise<RetainedCursor[]> {
    if (this.cursors) return this.cursors;
    const value = await this.storage.get(RETAINED_KEY);
    this.cursors = Array.isArray(value) ? value.filter(isCursor) : [];
    this.stored = this.cursors.length > 0;
    return this.cursors;
  }

  /** Nothing is pending (known without reading storage). */
  get idle(): boolean {
    return this.cursors !== null && this.cursors.length === 0;
  }

  /** Writes the pending cursors, or deletes them once none is left. */
  async save(): Promise<void> {
    const cursors = this.cursors ?? [];
    if (cursors.length > 0) {
      this.stored = true;
      await this.storage.put(RETAINED_KEY, cursors);
    } else if (this.stored) {
      this.stored = false;
      await this.storage.delete(RETAINED_KEY);
    }
  }
}

function isCursor(v: unknown): v is RetainedCursor {
  return typeof v === "object" && v !== null && Array.isArray((v as { subs?: unknown }).subs);
}
