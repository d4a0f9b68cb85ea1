import { ATTACHMENT_RX_MAX, type Attachment } from "./state";
import { RX_KEY } from "./keys";

/**
 * The bytes of a packet that has not fully arrived, kept where they survive hibernation:
 * in the socket attachment when small (no storage write), else in storage under `rx`.
 */
export class PartialPacket {
  /** undefined = not loaded since the last wake. */
  private bytes: Uint8Array | undefined;

  constructor(private readonly storage: DurableObjectStorage) {}

  async load(att: Attachment): Promise<Uint8Array> {
    if (this.bytes !== undefined) return this.bytes;
    if (att.rxStored) {
      const stored = await this.storage.get(RX_KEY);
      this.bytes = stored instanceof Uint8Array ? stored : new Uint8Array(0);
    } else this.bytes = att.rx ?? new Uint8Array(0);
    return this.bytes;
  }

  /** Keeps `rest`; the caller saves the attachment afterwards. */
  async save(att: Attachment, rest: Uint8Array): Promise<void> {
    // Copy: `rest` is a view into a larger buffer that must not be retained or serialized whole.
    const copy = rest.slice();
    this.bytes = copy;
    const wasStored = att.rxStored;
    if (copy.byteLength <= ATTACHMENT_RX_MAX) {
      att.rx = copy.byteLength > 0 ? copy : null;
      att.rxStored = false;
      if (wasStored) await this.storage.delete(RX_KEY);
    } else {
      att.rx = null;
      att.rxStored = true;
      await this.storage.put(RX_KEY, copy);
    }
  }

  /** Forget the in-memory copy (a simulated wake in tests reloads from the attachment). */
  reset(): void {
    this.bytes = undefined;
  }
}
