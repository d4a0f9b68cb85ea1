/**
 * The end of a connection, exactly once whoever asks (client, broker, takeover, admin, a
 * vanished socket): close the socket, then a plan of what to publish and what to hand back
 * to whom (`planTeardown`, pure), then the calls, then clear the object's storage.
 */
import { CLOSE_CAUSES, type CloseCause } from "../../protocol/codes";
import { errorMessage, log } from "../../log";
import { disconnectEvent, type TrafficCounters } from "../../monitoring/events";
import type { Handover, Message } from "../../router/messages";
import { connectionFacts, type ConnMeta } from "../state";
import type { Link, PendingDetach, RateBuckets, SessionDetach } from "../link";

export interface TeardownInput {
  meta: ConnMeta;
  cause: CloseCause;
  /** false on a takeover: the new connection receives the hand-over as the answer instead. */
  handBack: boolean;
  /**
   * A takeover by a connection that resumes this session (clean start 0, and the session outlives
   * this connection): the session does not end, so the will is not published (MQTT 5 §3.1.2.5; mosquitto
   * does the same for 3.1.1).
   */
  resumed: boolean;
  /** Inbound QoS 2 messages received (PUBREC sent) whose PUBREL never came: the broker owns them, so they are routed now. */
  unreleased: Message[];
  /**
   * Publishes received but still waiting for the router call in flight when the connection
   * ended: routed now, not lost (QoS 1 ones were not acknowledged, so a resend may repeat them: at least once).
   */
  queued?: Message[];
  /** An admin close that asked for no will. */
  willSuppressed: boolean;
  /** The connection got its CONNACK 0 (default). A refused one publishes nothing: no will, no Disconnect event. */
  connected?: boolean;
  traffic: TrafficCounters;
  /** The connection's rate limiters, for the next connection of the client id. */
  buckets?: RateBuckets;
  /** How long a freely chosen client id's Disconnect event stays retained (MONITOR_RETAIN_SECONDS). */
  monitorRetainSeconds?: number;
  /** The outbox's unfinished messages, in order, with their packet ids. */
  unfinished: Message[];
  /** Inbound QoS 2 ids not yet released (read only for a persistent session). */
  inboundQos2: number[];
  now: number;
}

export interface TeardownPlan {
  /** Published through the router before it forgets the target: unreleased QoS 2 messages, the will, then the Disconnect event. */
  announce: Message[];
  /** Shared-subscription messages a clean session leaves unfinished: back to their groups. */
  orphans: Message[];
  persistent: boolean;
  /** What the session keeps: unfinished messages and inbound QoS 2 ids (empty for a clean session). */
  handover: Handover;
  /** The session object's detach call, when the session is handed back to it. */
  sessionDetach: SessionDetach | null;
  /** A JWT identity frees its slot in the connection limiter. */
  releaseSlot: boolean;
}

/**
 * Decides what a leaving connection publishes and hands back. The client's QoS 2 messages still
 * waiting for PUBREL go first (PUBREC made them the broker's), then the will [MQTT-3.1.2-8], then
 * the monitoring event. The will is published when the session ends or its delay elapses, not
 * when a connection that resumes the session takes it over (§3.1.2.5). An MQTT 5 will delay hands
 * the will to the session object, which publishes it when the delay (or the session) ends unless
 * the session reconnects first [MQTT-3.1.3-9]. A persistent session keeps its unfinished
 * messages; a clean one gives its unfinished shared-subscription messages back to their
 * groups (not the QoS 2 ones already received). Pure.
 */
export function planTeardown(input: TeardownInput): TeardownPlan {
  const { meta, cause, handBack, unfinished } = input;
  const info = CLOSE_CAUSES[cause];
  const persistent = meta.expirySeconds > 0;
  const announce: Message[] = [...input.unreleased, ...(input.queued ?? [])];
  let delayedWill: SessionDetach["delayedWill"];
  if (info.publishWill && meta.will && !input.willSuppressed && input.connected !== false && !input.resumed) {
    const delay = Math.min(meta.willDelaySeconds, meta.expirySeconds);
    if (delay > 0 && handBack) delayedWill = { message: meta.will, delaySeconds: delay };
    else announce.push(meta.will);
  }
  const { identity, clientId } = meta;
  const chosenFreely = identity.kind === "anonymous" || (identity.kind === "user" && clientId !== identity.id);
  if (input.connected !== false) {
    announce.push(disconnectEvent(connectionFacts(meta), input.now, info.monitorCode, info.reason, input.traffic, chosenFreely ? input.monitorRetainSeconds : undefined));
  }
  const handover: Handover = persistent ? { messages: unfinished, inboundQos2: input.inboundQos2 } : { messages: [], inboundQos2: [] };
  const sessionDetach: SessionDetach | null = handBack
    ? { handover, expirySeconds: meta.expirySeconds, ...(delayedWill ? { delayedWill } : {}), ...(input.buckets ? { buckets: input.buckets } : {}) }
    : null;
  return {
    announce,
    orphans: persistent ? [] : unfinished.filter((m) => m.share !== undefined && !m.released),
    persistent,
    handover,
    sessionDetach,
    releaseSlot: meta.identity.kind === "user",
  };
}

/**
 * Ends the connection for `cause`, once; later calls get the same hand-over. `handBack: false`
 * and `resumed` come with a takeover (see {@link TeardownInput}).
 */
export function closeConnection(link: Link, cause: CloseCause, opts: { handBack?: boolean; resumed?: boolean } = {}): Promise<Handover> {
  const state = link.state;
  if (!state.closing) state.closing = runTeardown(link, cause, opts.handBack !== false, opts.resumed === true);
  return state.closing;
}

const NO_TRAFFIC: TrafficCounters = { readBytes: 0, readMsg: 0, writeBytes: 0, writeMsg: 0 };

async function runTeardown(link: Link, cause: CloseCause, handBack: boolean, resumed: boolean): Promise<Handover> {
  const info = CLOSE_CAUSES[cause];
  const att = link.attachment();
  // Whether CONNACK 0 went out; after a wake without the socket, a stored meta means it did.
  const wasConnected = att ? att.phase === "connected" : true;
  if (att) {
    // MQTT 5: the server says why before it closes a connection it decided to close (§4.13.2).
    // Those are exactly the causes with an error reason (>= 0x80); the client's own ends are 0x00/0x04.
    if (att.protocolVersion === 5 && att.phase === "connected" && info.v5Reason >= 0x80) {
      const properties = att.problemInfo ? { reasonString: info.reason } : undefined;
      link.send({ cmd: "disconnect", reasonCode: info.v5Reason, ...(properties ? { properties } : {}) });
    }
    att.phase = "closing";
    link.saveAttachment(att);
    link.closeSocket(info.wsCode, info.reason);
  }
  const state = link.state;
  const pending = await link.pendingDetach();
  if (pending) {
    // An earlier teardown published and detached everything but could not hand the session
    // back: only that is left to do (its storage was kept for it).
    await retrySessionDetach(link, pending);
    return { messages: [], inboundQos2: [] };
  }
  // A router call in flight decides which released QoS 2 messages are routed already.
  await state.routingCall?.catch(() => undefined);
  // What waited behind that call is routed with the announcements (a released QoS 2 entry carries
  // no message: `unrouted` has it). The batcher stops on `closing`, so nothing goes twice.
  const queued = state.publishQueue.splice(0).flatMap((p) => (p.message ? [p.message] : []));
  const meta = await link.readMeta();
  let handover: Handover = { messages: [], inboundQos2: [] };
  if (meta) {
    const persistent = meta.expirySeconds > 0;
    const plan = planTeardown({
      meta, cause, handBack, resumed,
      unreleased: await state.inboundQos2.unrouted(),
      queued,
      willSuppressed: state.willSuppressed,
      connected: wasConnected,
      traffic: att?.traffic ?? NO_TRAFFIC,
      ...(att?.packets ? { buckets: { publish: att.bucket, packets: att.packets } } : {}),
      unfinished: await state.outbox.handover(),
      inboundQos2: persistent ? await state.inboundQos2.all() : [],
      now: link.now(),
      monitorRetainSeconds: link.config.limits.monitorRetainSeconds,
    });
    handover = plan.handover;
    const handedBack = await applyTeardown(link, meta, plan);
    log("info", "mqtt.disconnect", { account: meta.account, clientId: meta.clientId, cause, code: info.monitorCode });
    if (!handedBack && plan.sessionDetach) {
      // The session's unfinished messages and QoS 2 ids exist only here: keep them and try again.
      await link.keepPendingDetach({ account: meta.account, clientId: meta.clientId, detach: plan.sessionDetach }, DETACH_RETRY_MS);
      return handover;
    }
  }
  await link.clearStorage();
  state.outbox.reset();
  state.inboundQos2.reset();
  return handover;
}

/** After a failed session detach, the next try (by alarm); tries stop after DETACH_TRIES. */
const DETACH_RETRY_MS = 30_000;
const DETACH_TRIES = 20;

async function retrySessionDetach(link: Link, pending: PendingDetach): Promise<void> {
  const { account, clientId, detach } = pending;
  const tries = (pending.tries ?? 1) + 1;
  try {
    await link.services.session(account, clientId).detach(link.connId, detach);
  } catch (err) {
    log("error", "mqtt.session_detach_failed", { clientId, tries, error: errorMessage(err) });
    if (tries < DETACH_TRIES) {
      await link.keepPendingDetach({ ...pending, tries }, DETACH_RETRY_MS);
      return;
    }
    log("error", "mqtt.session_detach_abandoned", { clientId, messages: detach.handover.messages.length });
  }
  await link.clearStorage();
}

/** The calls of a plan; each failure is logged and the others still run. False when the session could not be handed back. */
async function applyTeardown(link: Link, meta: ConnMeta, plan: TeardownPlan): Promise<boolean> {
  const { account, clientId, identity } = meta;
  const failed = (event: string) => (err: unknown) => log("error", event, { clientId, error: errorMessage(err) });
  await link.services
    .router(account)
    .detach(clientId, link.connId, { persistent: plan.persistent, announce: plan.announce, orphans: plan.orphans })
    .catch(failed("mqtt.detach_failed"));
  if (plan.releaseSlot) await link.services.limiter(account, identity.id).release(link.connId, clientId).catch(failed("mqtt.release_failed"));
  if (!plan.sessionDetach) return true;
  return link.services
    .session(account, clientId)
    .detach(link.connId, plan.sessionDetach)
    .then(() => true, (err: unknown) => (failed("mqtt.session_detach_failed")(err), false));
}
