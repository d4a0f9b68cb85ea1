import { DurableObject } from "cloudflare:workers";
import type { Env } from "../env";
import { clockStub, limiterStub, sessionStub } from "../stubs";
import { accountRouter, shardingOf } from "../router/shards";
import { DEFAULT_CONFIG, loadConfig, type Config, type ConfigError } from "../config";
import { configInvalidResponse } from "../http/errors";
import { errorMessage, log } from "../log";
import { concatBytes, decodePacket, readFrames } from "../protocol/codec";
import { ConnackCode, type CloseCause } from "../protocol/codes";
import { CSRF_COOKIE, TOKEN_COOKIE, readCookie } from "../auth/cookies";
import { ADDR_HEADER, SUBPROTOCOL_HEADER, TRANSPORT_HEADER } from "../headers";
import { PAGE_BYTES, pagesOf, type DeliverResult, type Message, type TakenOver } from "../router/messages";
import { count, meterStorage } from "../metrics";
import { authenticateConnect } from "./authenticate";
import { fullBucket } from "../limits/rate";
import { alarmVerdict, keepAliveDeadline } from "./keepalive";
import { connectionFacts, decodeConnMeta, type Attachment, type ConnectionDescription } from "./state";
import { BROWSER_KEY } from "./keys";
import { createConnState, type ConnState, type RouterPort, type Services } from "./link";
import { SocketLink } from "./socket-link";
import { dispatch } from "./dispatch";
import { deliverMessages } from "./handlers/deliver";
import { closeConnection } from "./handlers/teardown";

/** After an alarm that failed, the next try. */
const ALARM_RETRY_MS = 30_000;

/**
 * One object per WebSocket (a unique id per upgrade): it is the only code that reads from
 * or writes to the socket. Standard clients connect to the plain URL, so the client id is
 * unknown when the socket is routed here; after CONNECT this object claims the session
 * from the session object (`session-store.ts`) and registers itself with the account's
 * router as the session's delivery target, so an online delivery costs one hop from the
 * router to here.
 *
 * This class is the runtime adapter: entry points, the RPC API, framing. What each packet
 * does lives in `handlers/`, behind the port of `link.ts`.
 *
 * State that must outlive an event: the socket attachment (phase, identity, keep-alive
 * clock, a small partial packet), and storage (`keys.ts`: identity and will, unacknowledged
 * QoS 1/2 messages, inbound QoS 2 ids, topic aliases, a large partial packet).
 */
export class MqttConnection extends DurableObject<Env> {
  private readonly config: Config;
  /**
   * Set when the vars do not parse: upgrades are refused (500 config_invalid, as the Worker
   * answers), and `config` holds the defaults, for the alarms of connections from before.
   */
  private readonly configError: ConfigError | undefined;
  /** In-memory state: built empty after every wake (`wake`), reloaded lazily. */
  private state!: ConnState;
  private link!: SocketLink;
  /** The rest of a takeover's hand-over, in pages (memory only: the new owner asks for them at once). */
  private handoverPages: Message[][] = [];
  /** Serializes packet processing: a CONNECT awaiting its RPCs holds the packets behind it. */
  private chain: Promise<void> = Promise.resolve();

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    meterStorage(ctx, env, "connection");
    const loaded = loadConfig(env);
    this.config = loaded.ok ? loaded.config : DEFAULT_CONFIG;
    this.configError = loaded.ok ? undefined : loaded.error;
    this.wake();
  }

  /** The in-memory state and the port, as the constructor builds them after every wake (tests simulate one with it). */
  private wake(): void {
    // A real wake follows hibernation, which waits for a deferred attachment write; a simulated one writes it first.
    this.link?.flushAttachment();
    this.state = createConnState(this.ctx.storage, this.config);
    this.link = new SocketLink(this.ctx, this.ctx.id.toString(), this.config, this.state, stubServices(this.env, this.config));
  }

  // ---------------------------------------------------------------- entry points

  /** The WebSocket upgrade, forwarded by the Worker from `GET /mqtt`. */
  override async fetch(request: Request): Promise<Response> {
    count(this.env, "doFetch", "connection.fetch");
    if (this.configError) return configInvalidResponse(this.configError);
    const pair = new WebSocketPair();
    const [client, server] = [pair[0], pair[1]];
    this.ctx.acceptWebSocket(server);
    const now = Date.now();
    const att: Attachment = {
      v: 1,
      phase: "connecting",
      account: "",
      clientId: "",
      clean: true,
      keepAlive: 0,
      protocolVersion: 4,
      openedAt: now,
      lastSeen: now,
      addr: request.headers.get(ADDR_HEADER) ?? "",
      transport: request.headers.get(TRANSPORT_HEADER) === "tcp" ? "tcp" : "ws",
      rx: null,
      rxStored: false,
      expiresAt: null,
      traffic: { readBytes: 0, readMsg: 0, writeBytes: 0, writeMsg: 0 },
      bucket: fullBucket(this.config.limits.publishBurst, now),
      packets: fullBucket(this.config.limits.packetBurst, now),
      maxPacketOut: 0,
      receiveMax: this.config.limits.maxInflight,
      problemInfo: true,
    };
    const cookies = request.headers.get("cookie");
    const token = readCookie(cookies, TOKEN_COOKIE);
    const csrf = readCookie(cookies, CSRF_COOKIE);
    if (token && csrf) att.browser = true;
    this.link.saveAttachment(att);
    // Each upgrade gets a new object (a unique id): nothing is stored yet, so the CONNECT need not look.
    this.state.outbox.reset();
    this.state.inboundQos2.reset();
    // The connect timeout is a timer; the meta stored at CONNECT comes with the alarm (`holdMeta`).
    this.link.armConnectTimeout(() => void this.connectTimedOut());
    if (token && csrf) {
      // The credentials are stored: the alarm, at the connect timeout, removes them should the runtime restart first.
      await this.ctx.storage.put(BROWSER_KEY, { token, csrf });
      await this.link.armAlarm(att, now + this.config.limits.connectTimeoutSeconds * 1000);
    }
    const headers = new Headers();
    const protocol = request.headers.get(SUBPROTOCOL_HEADER);
    if (protocol) headers.set("Sec-WebSocket-Protocol", protocol);
    return new Response(null, { status: 101, webSocket: client, headers });
  }

  override async webSocketMessage(ws: WebSocket, data: ArrayBuffer | string): Promise<void> {
    count(this.env, "wsIn", "connection");
    const step = this.chain.then(() => this.onData(data));
    this.chain = step.catch((err: unknown) => this.fail(ws, "MqttConnection:webSocketMessage", err));
    return this.chain;
  }

  override async webSocketClose(ws: WebSocket, code: number): Promise<void> {
    try {
      ws.close(code === 1005 || code === 1006 ? 1000 : code);
    } catch {
      // already closed
    }
    try {
      await closeConnection(this.link, code === 1006 ? "networkLost" : "clientClosed");
    } catch (err) {
      log("error", "MqttConnection:webSocketClose", { error: errorMessage(err) });
    }
  }

  override async webSocketError(_ws: WebSocket, error: unknown): Promise<void> {
    try {
      await closeConnection(this.link, "networkLost");
    } catch (err) {
      log("error", "MqttConnection:webSocketError", { error: errorMessage(err), cause: errorMessage(error) });
    }
  }

  /** No CONNECT within the connect timeout: the socket closes (`SocketLink.armConnectTimeout`). */
  private async connectTimedOut(): Promise<void> {
    const att = this.link.attachment();
    if (!att || att.phase !== "connecting" || this.state.closing) return;
    await this.link.close("protocolError").catch((err: unknown) => log("error", "MqttConnection:connectTimeout", { error: errorMessage(err) }));
  }

  /** Keep-alive and liveness clock: the one alarm of this object. */
  override async alarm(): Promise<void> {
    count(this.env, "alarmRun", "connection");
    try {
      const att = this.link.attachment();
      if (!att) {
        // A session hand-back kept by an earlier teardown is tried again; otherwise the socket
        // is gone without a close event (runtime restart, eviction): end the session here.
        if (this.state.closing && (await this.link.pendingDetach())) this.state.closing = null;
        await closeConnection(this.link, "networkLost");
        return;
      }
      const connectTimeoutMs = this.config.limits.connectTimeoutSeconds * 1000;
      switch (alarmVerdict(att, Date.now(), connectTimeoutMs)) {
        case "connectTimeout":
          return await this.link.close("protocolError");
        case "keepAliveTimeout":
          return await this.link.close("keepAliveTimeout");
        case "tokenExpired":
          // The token this connection authenticated with has expired.
          return await this.link.close("notAuthorized");
        case null:
          if (att.phase === "connecting") await this.link.armAlarm(att, att.openedAt + connectTimeoutMs);
          else await this.link.scheduleAlarm(att);
      }
    } catch (err) {
      log("error", "MqttConnection:alarm", { error: errorMessage(err) });
      // The clock must keep running: a silent client or a vanished socket is checked again.
      await this.ctx.storage.setAlarm(Date.now() + ALARM_RETRY_MS).catch(() => undefined);
    }
  }

  // ---------------------------------------------------------------- RPC API

  /**
   * Messages for this connection's session from the router (or the session object).
   * Resolves once every QoS 1 message is durable here; "gone" when the connection has
   * ended, so the caller hands them to the session object instead.
   */
  async deliver(clientId: string, messages: Message[]): Promise<DeliverResult> {
    const att = this.link.attachment();
    if (!att || this.state.closing) {
      if (!att && !this.state.closing) await this.endLost();
      return "gone";
    }
    if (att.phase === "closing" || att.clientId !== clientId) return "gone";
    await deliverMessages(this.link, messages);
    this.link.noteAttachment(att); // traffic counters
    return "ok";
  }

  /**
   * Another connection claimed this session [MQTT-3.1.4-3]: close, and return the session state
   * this connection held (unfinished outbound messages with their packet ids, inbound QoS 2 ids)
   * so the new connection carries on. The will is published unless the new connection resumes
   * this session (`cleanStart` false, and the session outlives this connection): then the session
   * does not end (MQTT 5 §3.1.2.5; mosquitto treats 3.1.1 the same).
   */
  async takeover(clientId: string, opts: { cleanStart?: boolean; account?: string } = {}): Promise<TakenOver> {
    let meta = await this.link.readMeta();
    if (!meta && opts.account !== undefined && !this.link.attachment() && !this.state.closing) {
      // A connection that stored nothing, its socket gone with a restart: the clock hands over the meta it kept,
      // so the will and the Disconnect event come now, before the new connection's CONNACK.
      meta = await this.link.claimKeptMeta(opts.account, clientId);
    }
    if (!meta || meta.clientId !== clientId) return { messages: [], inboundQos2: [], more: false };
    const resumed = opts.cleanStart === false && meta.expirySeconds > 0;
    const handover = await closeConnection(this.link, "takenOver", { handBack: false, resumed });
    // The unfinished messages travel in pages bounded in bytes (`nextHandoverPage`).
    const [first = [], ...rest] = pagesOf(handover.messages, PAGE_BYTES);
    this.handoverPages = rest;
    return { messages: first, inboundQos2: handover.inboundQos2, more: rest.length > 0 };
  }

  /** The next page of a takeover's hand-over, right after `takeover`. */
  async nextHandoverPage(): Promise<{ messages: Message[]; more: boolean }> {
    const page = this.handoverPages.shift() ?? [];
    return { messages: page, more: this.handoverPages.length > 0 };
  }

  /**
   * Closes this connection now for `cause` (admin kick, disabled device, expired token).
   * Returns false when there was no live connection.
   */
  async close(cause: CloseCause, opts: { publishWill?: boolean } = {}): Promise<boolean> {
    if (!this.link.attachment() || this.state.closing) return false;
    if (opts.publishWill === false) this.state.willSuppressed = true;
    await closeConnection(this.link, cause);
    return true;
  }

  /**
   * What the admin client list shows of this connection (GET .../clients); null when it no
   * longer holds `clientId`'s socket. One storage read.
   */
  async describe(clientId: string): Promise<ConnectionDescription | null> {
    const att = this.link.attachment();
    if (!att || this.state.closing || att.phase !== "connected" || att.clientId !== clientId) return null;
    const meta = await this.link.readMeta();
    if (!meta) return null;
    const facts = connectionFacts(meta);
    return {
      clientId,
      identity: { kind: meta.identity.kind, id: meta.identity.id },
      protocol: facts.protocol,
      address: facts.addr,
      connectedAt: new Date(meta.connectedAt).toISOString(),
      keepAliveSeconds: att.keepAlive,
      cleanStart: meta.cleanStart,
      traffic: { ...att.traffic },
    };
  }

  /**
   * The keep-alive clock's check at this connection's deadline (KEEPALIVE_CLOCK = "shared"):
   * closes a client silent for 1.5 × its keep alive (Disconnect 160, the will), and answers the
   * next deadline, or null when there is nothing more to watch. A socket gone without a close
   * event (a runtime restart) ends the session; "meta" asks the clock for the meta it keeps for
   * this connection (`holdMeta`), which then comes as `meta` (`encodeConnMeta`).
   */
  async keepAliveCheck(meta?: string): Promise<number | null | "meta"> {
    if (this.state.closing) return null;
    const att = this.link.attachment();
    if (!att) {
      const kept = meta === undefined ? null : decodeConnMeta(meta);
      if (kept) {
        this.state.meta = kept;
        await closeConnection(this.link, "networkLost");
        return null;
      }
      if (await this.endLost()) return null;
      // Nothing stored here: the clock may keep the meta in its row (asked for once).
      return meta === undefined ? "meta" : null;
    }
    if (att.phase === "connecting") {
      // Watched at CONNECT, still being attached: asked again soon.
      return Date.now() + 1_000;
    }
    if (att.phase !== "connected") return null;
    if (alarmVerdict(att, Date.now(), this.config.limits.connectTimeoutSeconds * 1000) === "keepAliveTimeout") {
      await this.link.close("keepAliveTimeout");
      return null;
    }
    return keepAliveDeadline(att.lastSeen, att.keepAlive);
  }

  /**
   * The socket is gone without a close event (a runtime restart): a connection whose meta is in
   * storage ends its session by its alarm, now. False when there is no stored meta (nothing to
   * end, or the clock keeps it).
   */
  private async endLost(): Promise<boolean> {
    if (!(await this.link.readMeta())) return false;
    await this.ctx.storage.setAlarm(Date.now());
    return true;
  }

  /** For the connection limiter: does this object still hold the socket of `clientId`? */
  async isAlive(clientId: string): Promise<boolean> {
    const att = this.link.attachment();
    if (!att || this.state.closing) {
      if (!att && !this.state.closing) await this.endLost();
      return false;
    }
    return att.clientId === clientId;
  }

  // ---------------------------------------------------------------- inbound bytes

  /** Appends the frame to the leftover bytes, frames whole packets, keeps the rest, decodes, dispatches. */
  private async onData(data: ArrayBuffer | string): Promise<void> {
    if (this.state.closing) return;
    const link = this.link;
    const att = link.att();
    if (typeof data === "string") {
      // MQTT over WebSocket is binary only [MQTT-6.0.0-1].
      await link.close("invalidData");
      return;
    }
    const prev = await this.state.partial.load(att);
    const bytes = concatBytes(prev, new Uint8Array(data));
    const { frames, rest, error } = readFrames(bytes, this.config.limits.maxPacketBytes);
    att.lastSeen = Date.now();
    att.traffic.readBytes += data.byteLength;
    att.traffic.readMsg += frames.length;
    // The attachment carries the keep-alive clock and the counters across hibernation (a partial packet is written at once).
    if (error === undefined && (rest.byteLength > 0 || prev.byteLength > 0)) {
      await this.state.partial.save(att, rest);
      link.saveAttachment(att);
    } else link.noteAttachment(att);

    if (frames.length > this.config.limits.maxPacketsPerFrame) {
      // One frame holding a flood (524,288 PINGREQs in 1 MiB) is refused whole, before any work.
      log("warn", "mqtt.frame_flood", { clientId: att.clientId, packets: frames.length, max: this.config.limits.maxPacketsPerFrame });
      await link.close("rateExceeded");
      return;
    }
    for (const frame of frames) {
      if (this.state.closing || att.phase === "closing") return;
      const decoded = decodePacket(frame, att.protocolVersion);
      if (!decoded.ok && decoded.unsupportedLevel && att.phase === "connecting") {
        // [MQTT-3.1.2-2]: an unsupported protocol level gets CONNACK 1, then the connection closes.
        link.send({ cmd: "connack", returnCode: ConnackCode.UnacceptableProtocolVersion, sessionPresent: false });
        await link.close("protocolError", { quiet: true });
        return;
      }
      if (!decoded.ok) {
        log("warn", "mqtt.malformed", { clientId: att.clientId, error: decoded.error });
        // MQTT 5 §4.13: a well-formed packet breaking a rule is a Protocol Error (0x82), not Malformed (0x81).
        await link.close(decoded.protocolError ? "protocolError" : "invalidData");
        return;
      }
      await dispatch(link, decoded.packet);
    }
    if (error) {
      log("warn", "mqtt.frame_error", { clientId: att.clientId, error: error.message });
      await link.close(error.kind === "too-large" ? "tooLarge" : "invalidData");
    }
  }

  private async fail(ws: WebSocket, where: string, err: unknown): Promise<void> {
    log("error", where, { error: errorMessage(err) });
    try {
      await closeConnection(this.link, "serverError");
    } catch (inner) {
      log("error", `${where}:end`, { error: errorMessage(inner) });
      try {
        ws.close(1011, "internal error");
      } catch {
        // already closed
      }
    }
  }
}

/** The port's services over the real stubs; the account is bound per call site. */
function stubServices(env: Env, config: Config): Services {
  let routers: { account: string; port: RouterPort } | undefined;
  return {
    // The account's router: one object, or ROUTER_SHARDS of them (the port picks the shard per message and filter).
    // Made once, not per publish: a connection object serves one account.
    router: (account) => {
      if (routers?.account !== account) routers = { account, port: accountRouter(env, account, shardingOf(config.limits)) };
      return routers.port;
    },
    session: (account, clientId) => {
      const stub = sessionStub(env, account, clientId);
      return {
        attach: (conn, opts) => stub.attach(account, clientId, conn, opts),
        detach: (conn, opts) => stub.detach(conn, opts),
      };
    },
    limiter: (account, identity) => limiterStub(env, account, identity),
    clock: (account) => {
      const stub = clockStub(env, account);
      return { watch: (conn, deadline, meta) => stub.watch(conn, deadline, meta), unwatch: (conn) => stub.unwatch(conn), claim: (conn) => stub.claim(conn) };
    },
    authenticate: (packet, browser) => authenticateConnect(packet, env, config, browser),
  };
}
