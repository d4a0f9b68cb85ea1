/**
 * An in-memory port for the connection's packet handlers: storage in a Map, packets
 * recorded as they are sent, closes recorded by cause, and the router, session and limiter
 * as scripted fakes. No workerd: the handlers run in plain node.
 */
import { DEFAULT_LIMITS, type Config } from "../../../src/config";
import { decodePacket, readFrames, type Packet, type ProtocolVersion } from "../../../src/protocol/codec";
import type { CloseCause } from "../../../src/protocol/codes";
import type { Message, RetainedCursor, RetainedPageResult, Routed, RouterAttach, RouterAttached, RouterDetach, Subscribed, SubscriptionRequest } from "../../../src/router/messages";
import { createConnState, type ConnState, type Link, type PendingDetach, type Services } from "../../../src/session/link";
import type { Attachment, ConnMeta } from "../../../src/session/state";
import type { ConnectDecision } from "../../../src/session/authenticate";
import { fullBucket } from "../../../src/limits/rate";

/** The subset of DurableObjectStorage the connection's stores use, over a Map. */
export class MemoryStorage {
  readonly data = new Map<string, unknown>();
  alarm: number | null = null;
  /** Keys put or deleted, as Cloudflare bills rows written. */
  rowsWritten = 0;

  async get(key: string): Promise<unknown> {
    return structuredClone(this.data.get(key));
  }

  async put(key: string | Record<string, unknown>, value?: unknown): Promise<void> {
    if (typeof key === "string") this.data.set(key, structuredClone(value));
    else for (const [k, v] of Object.entries(key)) this.data.set(k, structuredClone(v));
    this.rowsWritten += typeof key === "string" ? 1 : Object.keys(key).length;
  }

  async delete(key: string | string[]): Promise<boolean | number> {
    this.rowsWritten += typeof key === "string" ? 1 : key.length;
    if (typeof key === "string") return this.data.delete(key);
    let n = 0;
    for (const k of key) if (this.data.delete(k)) n++;
    return n;
  }

  async list(opts: { prefix?: string } = {}): Promise<Map<string, unknown>> {
    const keys = [...this.data.keys()].filter((k) => k.startsWith(opts.prefix ?? "")).sort();
    return new Map(keys.map((k) => [k, structuredClone(this.data.get(k))]));
  }

  async deleteAll(): Promise<void> {
    this.data.clear();
  }

  async setAlarm(at: number): Promise<void> {
    this.alarm = at;
  }

  async deleteAlarm(): Promise<void> {
    this.alarm = null;
  }

  /** Typed as the runtime's storage for the stores under test (they use only the methods above). */
  asDurableObjectStorage(): DurableObjectStorage {
    return this as unknown as DurableObjectStorage;
  }
}

/** A promise with its resolve/reject handles, to hold a fake RPC in flight. */
export interface Deferred<T> {
  promise: Promise<T>;
  resolve(value: T): void;
  reject(err: Error): void;
}

export function deferred<T>(): Deferred<T> {
  let resolve!: (value: T) => void;
  let reject!: (err: Error) => void;
  const promise = new Promise<T>((ok, fail) => {
    resolve = ok;
    reject = fail;
  });
  return { promise, resolve, reject };
}

/** The router as the handlers see it: records every call; `publish` waits for `onPublish` and answers from `outcomes`. */
export class FakeRouter {
  readonly published: Message[][] = [];
  readonly subscribed: SubscriptionRequest[][] = [];
  readonly attached: RouterAttach[] = [];
  readonly detached: RouterDetach[] = [];
  onPublish: (messages: Message[]) => Promise<void> = async () => undefined;
  /** What became of each published message (default: a subscription matched it). */
  outcomes: (messages: Message[]) => Routed[] = (messages) => messages.map(() => "matched");
  granted: (requests: SubscriptionRequest[]) => boolean[] = (requests) => requests.map(() => true);
  /** Retained messages on subscribe, page by page: the first comes with SUBACK, the rest from `retainedPage`. */
  retained: Message[][] = [];
  /** `retainedPage` calls made. */
  pagesRead = 0;

  async publish(messages: Message[]): Promise<Routed[]> {
    this.published.push(messages);
    await this.onPublish(messages);
    return this.outcomes(messages);
  }

  async subscribe(_clientId: string, requests: SubscriptionRequest[]): Promise<Subscribed> {
    this.subscribed.push(requests);
    return { granted: this.granted(requests), retained: this.retained[0] ?? [], more: this.cursorAfter(0) };
  }

  async retainedPage(cursor: RetainedCursor): Promise<RetainedPageResult> {
    this.pagesRead++;
    const index = Number(cursor.after);
    return { messages: this.retained[index] ?? [], more: this.cursorAfter(index) };
  }

  private cursorAfter(index: number): RetainedCursor | null {
    return index + 1 < this.retained.length ? { subs: [{ filter: "#", qos: 1 }], after: String(index + 1), limit: 1 } : null;
  }

  async unsubscribe(_clientId: string, filters: string[]): Promise<boolean[]> {
    return filters.map(() => true);
  }

  async attach(_clientId: string, _conn: string, opts: RouterAttach): Promise<RouterAttached> {
    this.attached.push(opts);
    return { ok: true };
  }

  async detach(_clientId: string, _conn: string, opts: RouterDetach): Promise<void> {
    this.detached.push(opts);
  }
}

export function testConfig(limits: Partial<Config["limits"]> = {}): Config {
  return { limits: { ...DEFAULT_LIMITS, ...limits }, maxMultiConnections: 10, anonymousAccount: "anon" };
}

export function connectedAttachment(version: ProtocolVersion = 4, over: Partial<Attachment> = {}): Attachment {
  return {
    v: 1, phase: "connected", account: "acc", clientId: "c1", clean: true, keepAlive: 60, protocolVersion: version,
    openedAt: 0, lastSeen: 0, addr: "127.0.0.1", transport: "ws", rx: null, rxStored: false, expiresAt: null,
    traffic: { readBytes: 0, readMsg: 0, writeBytes: 0, writeMsg: 0 },
    bucket: fullBucket(DEFAULT_LIMITS.publishBurst, 0), maxPacketOut: 0, receiveMax: 100, problemInfo: true,
    ...over,
  };
}

export function connMeta(over: Partial<ConnMeta> = {}): ConnMeta {
  return {
    account: "acc", clientId: "c1", cleanStart: true, expirySeconds: 0, willDelaySeconds: 0, will: null, protocolVersion: 4,
    identity: { kind: "anonymous", account: "acc", id: "anonymous", acl: { pub: ["#"], sub: ["#"] }, expiresAt: null },
    addr: "127.0.0.1", transport: "ws", connectedAt: 0,
    ...over,
  };
}

/** The in-memory port. `sent` holds every packet in order (PUBLISH decoded back from its bytes). */
export class FakeLink implements Link {
  readonly connId = "conn-1";
  readonly storage = new MemoryStorage();
  readonly state: ConnState;
  readonly sent: Packet[] = [];
  readonly closes: CloseCause[] = [];
  readonly router = new FakeRouter();
  readonly services: Services;
  clock = 1_000;
  private current: Attachment | null;
  private stored: ConnMeta | null;

  constructor(
    readonly config: Config = testConfig(),
    att: Attachment = connectedAttachment(),
    meta: ConnMeta | null = connMeta(),
  ) {
    this.state = createConnState(this.storage.asDurableObjectStorage(), config);
    this.current = att;
    this.stored = meta;
    this.state.outbox.setWindow(att.receiveMax);
    this.state.outbox.setEphemeral(att.clean);
    this.services = {
      router: () => this.router,
      session: () => ({ attach: async () => ({ ok: true, sessionPresent: false, inboundQos2: [] }), detach: async () => undefined }),
      limiter: () => ({ claim: async () => ({ ok: true }), release: async () => undefined }),
      clock: () => ({ watch: async () => true, unwatch: async () => undefined, claim: async () => null }),
      authenticate: async (): Promise<ConnectDecision> => ({ ok: false, code: 5, cause: "notAuthorized", reason: "fake" }),
    };
  }

  now(): number {
    return this.clock;
  }

  attachment(): Attachment | null {
    return this.current;
  }

  att(): Attachment {
    if (!this.current) throw new Error("no socket");
    return this.current;
  }

  saveAttachment(att: Attachment): void {
    this.current = att;
  }

  send(packet: Packet): void {
    this.sent.push(packet);
  }

  sendBytes(bytes: Uint8Array): void {
    const { frames } = readFrames(bytes, 1 << 24);
    for (const frame of frames) {
      const decoded = decodePacket(frame, this.att().protocolVersion);
      if (!decoded.ok) throw new Error(`sent a malformed packet: ${decoded.error}`);
      this.sent.push(decoded.packet);
    }
  }

  closeSocket(): void {
    this.current = null;
  }

  async close(cause: CloseCause): Promise<void> {
    this.closes.push(cause);
    this.state.closing ??= Promise.resolve({ messages: [], inboundQos2: [] });
  }

  async meta(): Promise<ConnMeta> {
    if (!this.stored) throw new Error("no meta");
    return this.stored;
  }

  async readMeta(): Promise<ConnMeta | null> {
    return this.stored;
  }

  async holdMeta(meta: ConnMeta): Promise<void> {
    this.stored = meta;
  }

  async claimKeptMeta(): Promise<ConnMeta | null> {
    return null;
  }

  async saveMeta(meta: ConnMeta): Promise<void> {
    this.stored = meta;
  }

  async forgetMeta(): Promise<void> {
    this.stored = null;
  }

  async takeBrowserCredentials(): Promise<null> {
    return null;
  }

  async scheduleAlarm(): Promise<void> {}
  async scheduleFirstCheck(): Promise<void> {}

  async clearStorage(): Promise<void> {
    await this.storage.deleteAll();
    this.pending = null;
  }

  pending: PendingDetach | null = null;

  async pendingDetach(): Promise<PendingDetach | null> {
    return this.pending;
  }

  async keepPendingDetach(pending: PendingDetach, retryMs: number): Promise<void> {
    await this.storage.deleteAll();
    this.pending = pending;
    this.storage.alarm = this.clock + retryMs;
  }

  /** The commands sent so far, for order checks. */
  cmds(): string[] {
    return this.sent.map((p) => p.cmd);
  }
}

/** Runs every pending promise callback: the fakes use no timers or I/O, so one macrotask turn drains them all. */
export function settle(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}
