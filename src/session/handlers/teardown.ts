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
import type { Link } from "../link";
import type { SessionDetach } from "../session-store";

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
  /** An admin close that asked for no will. */
  willSuppressed: boolean;
  traffic: TrafficCounters;
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
  const announce: Message[] = [...input.unreleased];
  let delayedWill: SessionDetach["delayedWill"];
  if (info.publishWill && meta.will && !input.willSuppressed && !input.resumed) {
    const delay = Math.min(meta.willDelaySeconds, meta.expirySeconds);
    if (delay > 0 && handBack) delayedWill = { message: meta.will, delaySeconds: delay };
    else announce.push(meta.will);
  }
  announce.push(disconnectEvent(connectionFacts(meta), input.now, info.monitorCode, info.reason, input.traffic));
  const handover: Handover = persistent ? { messages: unfinished, inboundQos2: input.inboundQos2 } : { messages: [], inboundQos2: [] };
  const sessionDetach: SessionDetach | null = handBack
    ? { handover, expirySeconds: meta.expirySeconds, ...(delayedWill ? { delayedWill } : {}) }
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
  // A router call in flight decides which released QoS 2 messages are routed already.
  await state.routingCall?.catch(() => undefined);
  const meta = await link.readMeta();
  let handover: Handover = { messages: [], inboundQos2: [] };
  if (meta) {
    const persistent = meta.expirySeconds > 0;
    const plan = planTeardown({
      meta, cause, handBack, resumed,
      unreleased: await state.inboundQos2.unrouted(),
      willSuppressed: state.willSuppressed,
      traffic: att?.traffic ?? NO_TRAFFIC,
      unfinished: await state.outbox.handover(),
      inboundQos2: persistent ? await state.inboundQos2.all() : [],
      now: link.now(),
    });
    handover = plan.handover;
    await applyTeardown(link, meta, plan);
    log("info", "mqtt.disconnect", { account: meta.account, clientId: meta.clientId, cause, code: info.monitorCode });
  }
  await link.clearStorage();
  state.outbox.reset();
  state.inboundQos2.reset();
  return handover;
}

/** The calls of a plan; each failure is logged and the others still run. */
async function applyTeardown(link: Link, meta: ConnMeta, plan: TeardownPlan): Promise<void> {
  const { account, clientId, identity } = meta;
  const failed = (event: string) => (err: unknown) => log("error", event, { clientId, error: errorMessage(err) });
  await link.services
    .router(account)
    .detach(clientId, link.connId, { persistent: plan.persistent, announce: plan.announce, orphans: plan.orphans })
    .catch(failed("mqtt.detach_failed"));
  if (plan.releaseSlot) await link.services.limiter(account, identity.id).release(link.connId, clientId).catch(failed("mqtt.release_failed"));
  if (plan.sessionDetach) await link.services.session(account, clientId).detach(link.connId, plan.sessionDetach).catch(failed("mqtt.session_detach_failed"));
}
