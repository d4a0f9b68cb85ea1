import type { Config } from "../config";
import { concatBytes, encodePacket, type Packet } from "../protocol/codec";
import { CLOSE_CAUSES, type CloseCause } from "../protocol/codes";
import { errorMessage, log } from "../log";
import type { BrowserCredentials } from "./authenticate";
import { ATTACHMENT_META_MAX, decodeConnMeta, encodeConnMeta, readAttachment, readBrowserCredentials, readConnMeta, type Attachment, type ConnMeta } from "./state";
import { isRecord } from "../guards";
import { isMessage } from "../router/messages";
import { BROWSER_KEY, META_KEY, PENDING_DETACH_KEY } from "./keys";
import { clearAll } from "../storage";
import { alarmAfterConnack, alarmFor, keepAliveDeadline } from "./keepalive";
import type { ConnState, Link, PendingDetach, Services, SessionDetach } from "./link";
import { closeConnection } from "./handlers/teardown";

/** The most bytes `sendBytes` puts in one WebSocket frame. */
const FRAME_BYTES = 64 * 1024;

/**
 * How long the clock and counters of a busy connection may wait in memory before they are
 * written to the attachment (`noteAttachment`): one write per burst instead of one per frame.
 */
export const ATTACHMENT_SAVE_MS = 20;

/** The port over the object's one WebSocket and its storage. */
export class SocketLink implements Link {
  private ws: WebSocket | undefined;
  private corked: { parts: Uint8Array[]; bytes: number; queued: boolean } = { parts: [], bytes: 0, queued: false };
  /** A deferred attachment write (`noteAttachment`), or null. */
  private saveTimer: ReturnType<typeof setTimeout> | null = null;
  /** The connect timeout (`armConnectTimeout`), until CONNACK or the close. */
  private connectTimer: ReturnType<typeof setTimeout> | null = null;

  constructor(
    private readonly ctx: DurableObjectState,
    readonly connId: string,
    readonly config: Config,
    readonly state: ConnState,
    readonly services: Services,
  ) {}

  now(): number {
    return Date.now();
  }

  /**
   * The object's one WebSocket. Kept once found: `getWebSockets()` builds a fresh list on
   * every call, and sending and saving the attachment ask for the socket many times per
   * packet. Asked again once the kept one is no longer open.
   */
  private socket(): WebSocket | undefined {
    if (this.ws?.readyState === WebSocket.OPEN) return this.ws;
    this.ws = this.ctx.getWebSockets()[0];
    return this.ws;
  }

  attachment(): Attachment | null {
    const ws = this.socket();
    if (!ws) return null;
    if (this.state.att) return this.state.att;
    const att = readAttachment(ws.deserializeAttachment());
    if (!att) throw new Error("socket without a valid attachment");
    this.state.att = att;
    this.state.outbox.setWindow(att.receiveMax);
    this.state.outbox.setEphemeral(att.clean);
    this.trackAdmitted(att);
    return att;
  }

  /** The outbox keeps its admission mark in the attachment, which costs no row to rewrite. */
  private trackAdmitted(att: Attachment): void {
    this.state.outbox.trackAdmitted(att.outAdmitted ?? -1, (seq) => {
      att.outAdmitted = seq;
      this.saveAttachment(att);
    });
  }

  att(): Attachment {
    // Cached: a handler still running after the socket closed keeps its attachment.
    const att = this.state.att ?? this.attachment();
    if (!att) throw new Error("no socket");
    return att;
  }

  saveAttachment(att: Attachment): void {
    if (this.state.att !== att) this.trackAdmitted(att);
    this.state.att = att;
    this.cancelSave();
    this.socket()?.serializeAttachment(att);
  }

  /**
   * The attachment changed in what may lag a little: the keep-alive clock, the traffic counters
   * and the rate buckets of the frames just read. Written once within `ATTACHMENT_SAVE_MS`, so a
   * burst of frames costs one serialization instead of one each (it was about 5% of the runtime's
   * CPU in QoS 1 fan-in). Nothing is lost: the object cannot hibernate while the timer is pending,
   * and a runtime restart takes the socket, and its attachment, with it. Everything else (the
   * phase, a partial packet, the outbox's mark) is written at once by `saveAttachment`.
   */
  noteAttachment(att: Attachment): void {
    if (this.state.att !== att) return this.saveAttachment(att);
    this.saveTimer ??= setTimeout(() => this.flushAttachment(), ATTACHMENT_SAVE_MS);
  }

  /** Writes a deferred attachment now (before a simulated wake drops this port). */
  flushAttachment(): void {
    if (this.saveTimer === null) return;
    if (this.state.att) this.saveAttachment(this.state.att);
    else this.cancelSave();
  }

  private cancelSave(): void {
    if (this.saveTimer === null) return;
    clearTimeout(this.saveTimer);
    this.saveTimer = null;
  }

  send(packet: Packet): void {
    this.sendBytes(encodePacket(packet, this.att().protocolVersion));
  }

  /**
   * Packets sent in one synchronous stretch (a `deliver` call's PUBLISHes, a batch's PUBACKs)
   * leave in one WebSocket frame, flushed at the end of the stretch: a frame costs the runtime,
   * the edge and the client far more than its bytes. MQTT over WebSocket allows several
   * packets in one frame; the receiver must not assume packets align with frames [MQTT-6.0.0-4].
   * A frame holds at most `FRAME_BYTES`; a packet that size or larger goes alone.
   */
  sendBytes(bytes: Uint8Array): void {
    const att = this.att();
    att.traffic.writeBytes += bytes.byteLength;
    att.traffic.writeMsg++;
    if (this.corked.bytes + bytes.byteLength > FRAME_BYTES) this.flush();
    if (bytes.byteLength >= FRAME_BYTES) return this.write(bytes);
    this.corked.parts.push(bytes);
    this.corked.bytes += bytes.byteLength;
    if (!this.corked.queued) {
      this.corked.queued = true;
      queueMicrotask(() => this.flush());
    }
  }

  /** Sends what `sendBytes` holds, as one frame. */
  flush(): void {
    this.corked.queued = false;
    const { parts } = this.corked;
    if (parts.length === 0) return;
    this.corked.parts = [];
    this.corked.bytes = 0;
    this.write(concatBytes(...parts));
  }

  private write(frame: Uint8Array): void {
    try {
      this.socket()?.send(frame);
    } catch (err) {
      log("warn", "mqtt.send_failed", { clientId: this.state.att?.clientId, error: errorMessage(err) });
    }
  }

  closeSocket(code: number, reason: string): void {
    this.clearConnectTimeout();
    this.flush();
    try {
      this.socket()?.close(code, reason);
    } catch {
      // already closing
    }
  }

  async close(cause: CloseCause, opts: { quiet?: boolean } = {}): Promise<void> {
    const att = this.attachment();
    if (!opts.quiet && cause !== "clientDisconnect") {
      const info = CLOSE_CAUSES[cause];
      log("info", "mqtt.close", { clientId: att?.clientId, cause, code: info.monitorCode, reason: info.reason });
    }
    await closeConnection(this, cause);
  }

  async meta(): Promise<ConnMeta> {
    const meta = await this.readMeta();
    if (!meta) throw new Error("connected socket without identity in storage");
    return meta;
  }

  /** The meta: as this instance knows it, in the attachment, or in storage (one read, then kept). */
  async readMeta(): Promise<ConnMeta | null> {
    if (this.state.meta) return this.state.meta;
    const meta = this.attachment()?.meta ?? (await readConnMeta(this.ctx.storage));
    this.state.meta = meta;
    return meta;
  }

  async holdMeta(meta: ConnMeta): Promise<void> {
    this.state.meta = meta;
    const att = this.att();
    const { limits } = this.config;
    if (limits.keepAliveClock === "shared" && att.keepAlive > 0) {
      // Nothing else would make this connection store anything: a clean session (a persistent one stores its
      // unfinished messages), no browser credentials, no token expiry for the alarm.
      const encoded = meta.expirySeconds === 0 && !att.browser && meta.identity.expiresAt === null ? encodeConnMeta(meta) : undefined;
      const carried = encoded !== undefined && encoded.length <= ATTACHMENT_META_MAX ? encoded : undefined;
      if ((await this.watchOnClock(att, carried)) && carried !== undefined) {
        att.meta = meta;
        this.saveAttachment(att);
        return;
      }
    }
    await this.ctx.storage.put(META_KEY, meta);
    // The connect timeout; it also ends the session should the runtime restart before the connection ends.
    if (att.alarmAt === undefined) await this.armAlarm(att, att.openedAt + limits.connectTimeoutSeconds * 1000);
  }

  async claimKeptMeta(account: string, clientId: string): Promise<ConnMeta | null> {
    const kept = await this.services
      .clock(account)
      .claim(this.connId)
      .catch((err: unknown) => (log("warn", "mqtt.clock_unavailable", { clientId, error: errorMessage(err) }), null));
    const meta = kept === null ? null : decodeConnMeta(kept);
    if (meta?.account !== account || meta.clientId !== clientId) return null;
    this.state.meta = meta;
    return meta;
  }

  async saveMeta(meta: ConnMeta): Promise<void> {
    this.state.meta = meta;
    const att = this.attachment();
    if (att?.meta) {
      att.meta = meta;
      this.saveAttachment(att);
    } else await this.ctx.storage.put(META_KEY, meta);
  }

  async forgetMeta(): Promise<void> {
    this.state.meta = null;
    const att = this.attachment();
    if (!att?.meta) return void (await this.ctx.storage.delete(META_KEY));
    delete att.meta;
    this.saveAttachment(att);
    // The clock's copy must not end, after a restart, a connection that never connected.
    await this.unwatchClock(att);
  }

  async takeBrowserCredentials(): Promise<BrowserCredentials | null> {
    // Most clients are not browsers: no storage read for them.
    if (!this.att().browser) return null;
    const browser = readBrowserCredentials(await this.ctx.storage.get(BROWSER_KEY));
    if (browser) await this.ctx.storage.delete(BROWSER_KEY);
    return browser;
  }

  async scheduleAlarm(att: Attachment): Promise<void> {
    const at = alarmFor(att, this.now(), this.config.limits.keepAliveCheckSeconds);
    if (at !== null) await this.armAlarm(att, at);
  }

  async scheduleFirstCheck(att: Attachment): Promise<void> {
    this.clearConnectTimeout();
    const at = alarmAfterConnack(att, this.now(), this.config.limits.keepAliveCheckSeconds);
    if (at !== null) await this.armAlarm(att, at);
  }

  /**
   * Asks the account's keep-alive clock to check this connection at its deadline, carrying `meta`
   * for its row when given; false when it does not (full, unreachable): the alarm then stays exact.
   */
  private async watchOnClock(att: Attachment, meta: string | undefined): Promise<boolean> {
    const deadline = keepAliveDeadline(att.lastSeen, att.keepAlive);
    const watched =
      deadline !== null &&
      (await this.services
        .clock(att.account)
        .watch(this.connId, deadline, meta)
        .catch((err: unknown) => {
          log("warn", "mqtt.clock_unavailable", { clientId: att.clientId, error: errorMessage(err) });
          return false;
        }));
    if (watched) att.clocked = true;
    else delete att.clocked;
    this.saveAttachment(att);
    return watched;
  }

  /**
   * The connect timeout of a socket that has not connected yet, as a timer: a connecting object is
   * active anyway (a pending timer keeps it from hibernating), so it needs no alarm, and nothing is
   * stored. A restart takes the socket with the timer.
   */
  armConnectTimeout(onTimeout: () => void): void {
    this.clearConnectTimeout();
    this.connectTimer = setTimeout(() => {
      this.connectTimer = null;
      onTimeout();
    }, this.config.limits.connectTimeoutSeconds * 1000);
  }

  private clearConnectTimeout(): void {
    if (this.connectTimer === null) return;
    clearTimeout(this.connectTimer);
    this.connectTimer = null;
  }

  /** Sets the alarm (one row written) and notes its time in the attachment, which costs nothing. */
  async armAlarm(att: Attachment, at: number): Promise<void> {
    await this.ctx.storage.setAlarm(at);
    att.alarmAt = at;
    this.saveAttachment(att);
  }

  async pendingDetach(): Promise<PendingDetach | null> {
    return readPendingDetach(await this.ctx.storage.get(PENDING_DETACH_KEY));
  }

  async keepPendingDetach(pending: PendingDetach, retryMs: number): Promise<void> {
    await this.ctx.storage.deleteAll();
    await this.ctx.storage.put(PENDING_DETACH_KEY, pending);
    await this.ctx.storage.setAlarm(this.now() + retryMs);
  }

  /**
   * Everything this object stored, the alarm included, and the clock's copy of a meta that rode in
   * the attachment: after a restart the clock would otherwise hand it back and the ended connection
   * would end a second time. A connection that kept everything in its attachment stored nothing:
   * two reads, no `deleteAll` (`clearAll`).
   */
  async clearStorage(): Promise<void> {
    const att = this.attachment() ?? this.state.att;
    if (att?.meta) await this.unwatchClock(att);
    await clearAll(this.ctx.storage);
  }

  private async unwatchClock(att: Attachment): Promise<void> {
    await this.services
      .clock(att.account)
      .unwatch(this.connId)
      .catch((err: unknown) => log("warn", "mqtt.clock_unavailable", { clientId: att.clientId, error: errorMessage(err) }));
  }
}

/** A pending session detach read back from storage . */
export function readPendingDetach(v: unknown): PendingDetach | null {
  if (!isRecord(v) || typeof v.account !== "string" || typeof v.clientId !== "string") return null;
  const d = v.detach;
  if (!isRecord(d) || typeof d.expirySeconds !== "number" || !isRecord(d.handover)) return null;
  const h = d.handover;
  if (!Array.isArray(h.messages) || !h.messages.every(isMessage) || !Array.isArray(h.inboundQos2) || !h.inboundQos2.every((x) => typeof x === "number")) return null;
  const detach: SessionDetach = { handover: { messages: h.messages, inboundQos2: h.inboundQos2 }, expirySeconds: d.expirySeconds };
  const w = d.delayedWill;
  if (isRecord(w) && isMessage(w.message) && typeof w.delaySeconds === "number") detach.delayedWill = { message: w.message, delaySeconds: w.delaySeconds };
  return { account: v.account, clientId: v.clientId, detach, ...(typeof v.tries === "number" ? { tries: v.tries } : {}) };
}
