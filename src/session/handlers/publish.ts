/**
 * PUBLISH from the client: the checks, in the order the spec puts them, then the batcher
 * that hands publishes to the account's router. At most one router call is in flight;
 * publishes arriving meanwhile travel together in the next call, in order. A QoS 1 publish
 * is acknowledged only after the router call that carried it resolved (every copy durable);
 * when it fails, no acknowledgement goes out and the connection closes, so the client resends.
 *
 * QoS 2 follows the spec's "Method A" (mosquitto's order): the message is stored here, durably,
 * and PUBREC goes out at once; PUBREL hands it to the batcher, and PUBCOMP follows the router
 * call. So the publisher has its PUBREC before any subscriber (itself included) has the message.
 */
import type { IPublishPacket } from "../../protocol/codec";
import { V5 } from "../../protocol/codes";
import { toBytes } from "../../protocol/bytes";
import { errorMessage, log } from "../../log";
import type { Message, Routed } from "../../router/messages";
import { limitEvent } from "../../monitoring/events";
import { connectionFacts } from "../state";
import { canPublish, type Acl } from "../../topics/acl";
import { validateTopicName } from "../../topics/topic";
import { forwardedProps, payloadFormatValid } from "../properties";
import { take } from "../../limits/rate";
import type { Link, PendingPublish } from "../link";

export async function onPublish(link: Link, packet: IPublishPacket): Promise<void> {
  const att = link.att();
  const limits = link.config.limits;
  const state = link.state;
  if (!take(att.bucket, limits.publishRatePerSecond, limits.publishBurst, link.now())) {
    log("warn", "mqtt.rate_exceeded", { account: att.account, clientId: att.clientId, rate: limits.publishRatePerSecond });
    return link.close("rateExceeded");
  }
  const props = att.protocolVersion === 5 ? packet.properties : undefined;
  let topic = packet.topic;
  if (props?.topicAlias !== undefined) {
    const resolved = await state.aliases.resolve(props.topicAlias, topic);
    if (!resolved.ok) return link.close(resolved.cause);
    topic = resolved.topic;
  }
  const topicError = validateTopicName(topic, limits);
  if (topicError) {
    log("warn", "mqtt.invalid_topic", { clientId: att.clientId, error: topicError });
    return link.close("invalidTopic");
  }
  const payload = toBytes(packet.payload);
  if (payload.byteLength > limits.maxPayloadBytes) return link.close("tooLarge");
  if (packet.qos > 0 && !packet.messageId) return link.close("protocolError"); // [MQTT-2.3.1-1]
  const packetId = packet.qos > 0 ? packet.messageId : undefined;
  // A retransmission of a QoS 2 message already received is answered, not stored or counted again.
  const retransmitted = packet.qos === 2 && packetId !== undefined && (await state.inboundQos2.has(packetId));
  if (packetId !== undefined && !retransmitted && att.protocolVersion === 5 && (await inboundInFlight(link)) >= limits.maxInflight) {
    // [MQTT-3.3.4-7]: more QoS 1 and 2 publishes not yet acknowledged (QoS 2: until PUBCOMP) than the Receive Maximum we announced.
    return link.close("receiveMaximumExceeded");
  }
  const { identity } = await link.meta();
  const decision = decidePublish(packet, topic, payload, identity.acl, att.clientId, link.now());
  if (decision.reason === V5.payloadFormatInvalid) log("info", "mqtt.payload_format_invalid", { account: att.account, clientId: att.clientId, topic });
  if (decision.reason === V5.notAuthorized) log("info", "mqtt.publish_denied", { account: att.account, clientId: att.clientId, topic });
  if (packet.qos === 2 && packetId !== undefined) return receiveQos2(link, packetId, decision, retransmitted);
  if (packetId !== undefined) state.inboundPending++;
  const ack = packetId === undefined ? null : { cmd: "puback" as const, packetId };
  enqueue(link, { message: decision.message, ack, reason: decision.reason });
}

/** QoS 1 publishes waiting for their PUBACK and QoS 2 messages waiting for their PUBREL. */
async function inboundInFlight(link: Link): Promise<number> {
  return link.state.inboundPending + (await link.state.inboundQos2.pending());
}

/**
 * A QoS 2 PUBLISH: stored before PUBREC, so the broker owns it from then on [MQTT-4.3.3-9]; a
 * retransmission of a known id is answered again and not stored twice [MQTT-4.3.3-10]. A
 * refused one (MQTT 5: PUBREC >= 0x80) ends there [MQTT-4.3.3-9]; 3.1.1 has no negative PUBREC:
 * acknowledged, never routed.
 */
async function receiveQos2(link: Link, packetId: number, decision: PublishDecision, retransmitted: boolean): Promise<void> {
  if (!retransmitted && decision.message) await link.state.inboundQos2.store(packetId, decision.message);
  if (link.att().protocolVersion === 5 && decision.reason !== undefined && !retransmitted) {
    link.send({ cmd: "pubrec", messageId: packetId, reasonCode: decision.reason });
  } else link.send({ cmd: "pubrec", messageId: packetId });
}

/**
 * PUBREL for an inbound QoS 2 exchange: its stored message goes to the router with the next call,
 * in order with the publishes around it, and PUBCOMP follows the call. PUBCOMP also for an id
 * with nothing to route: the client may be resending after our PUBCOMP was lost [MQTT-4.3.3-11],
 * the message was refused, or routed when an earlier connection ended.
 */
export async function releaseInbound(link: Link, packetId: number): Promise<void> {
  await link.state.inboundQos2.load(); // the batcher claims the message synchronously
  enqueue(link, { message: null, ack: { cmd: "pubcomp", packetId }, reason: undefined });
}

function enqueue(link: Link, pending: PendingPublish): void {
  const state = link.state;
  state.publishQueue.push(pending);
  if (!state.routing) {
    state.flushing = flushPublishes(link).finally(() => {
      state.flushing = null;
    });
  }
}

/** Waits until every publish received so far has been routed (or the connection closed). */
export async function drainPublishes(link: Link): Promise<void> {
  while (link.state.flushing) await link.state.flushing;
}

/** What to do with one valid PUBLISH: the message to route, or null with the MQTT 5 reason of its acknowledgement. */
export interface PublishDecision {
  message: Message | null;
  reason: number | undefined;
}

/**
 * What to do with one valid PUBLISH: the message to route, or null with the MQTT 5 reason
 * of its acknowledgement (payload format invalid, not authorized). 3.1.1 has no negative
 * PUBACK: a refused QoS 1/2 publish is acknowledged and dropped, in order with the others
 * [MQTT-4.6.0-2]. Pure.
 */
export function decidePublish(packet: IPublishPacket, topic: string, payload: Uint8Array, acl: Acl, clientId: string, now: number): PublishDecision {
  const props = packet.properties;
  if (!payloadFormatValid(payload, props?.payloadFormatIndicator)) return { message: null, reason: V5.payloadFormatInvalid };
  if (!canPublish(acl, topic)) return { message: null, reason: V5.notAuthorized };
  const message: Message = { topic, payload, qos: packet.qos, retain: packet.retain, from: clientId };
  if (props) {
    const forwarded = forwardedProps(props);
    if (forwarded) message.props = forwarded;
    if (props.messageExpiryInterval !== undefined) message.expiresAt = now + props.messageExpiryInterval * 1000;
  }
  return { message, reason: undefined };
}

/**
 * Sends queued publishes to the router, one call at a time, then their acknowledgements. MQTT 5:
 * a QoS 1 message no subscription matched gets PUBACK 0x10 No matching subscribers (as mosquitto
 * and EMQX answer; the router says so per message), one past the account's retained quota
 * 0x97 Quota exceeded (3.1.1: a plain PUBACK, the message dropped); a quota refusal also
 * publishes a `LimitExceeded` monitoring event.
 */
export async function flushPublishes(link: Link): Promise<void> {
  const state = link.state;
  const att = link.att();
  const v5 = att.protocolVersion === 5;
  state.routing = true;
  try {
    while (state.publishQueue.length > 0 && !state.closing) {
      const batch = state.publishQueue;
      state.publishQueue = [];
      // Released QoS 2 messages join the call here, synchronously: from now on a teardown leaves them to it.
      const released: number[] = [];
      const carried = batch.map((p) => {
        if (p.ack?.cmd !== "pubcomp") return p.message;
        const message = state.inboundQos2.claim(p.ack.packetId);
        if (message) released.push(p.ack.packetId);
        return message;
      });
      const messages = carried.flatMap((m) => (m ? [m] : []));
      const outcomes = messages.length > 0 ? await routeCall(link, messages, released) : [];
      if (outcomes.includes("quota")) await reportQuota(link, messages.filter((_, i) => outcomes[i] === "quota").length);
      let routed = 0;
      for (const [i, { ack, reason }] of batch.entries()) {
        const outcome: Routed = carried[i] ? (outcomes[routed++] ?? "matched") : "matched";
        if (!ack) continue;
        if (ack.cmd === "pubcomp") {
          // Released durably before PUBCOMP: a PUBREL resent after a crash finds nothing to route again.
          await state.inboundQos2.release(ack.packetId);
          link.send({ cmd: "pubcomp", messageId: ack.packetId });
          continue;
        }
        state.inboundPending--;
        const code = reason ?? (!v5 ? undefined : outcome === "quota" ? V5.quotaExceeded : outcome === "unmatched" ? V5.noMatchingSubscribers : undefined);
        link.send(v5 && code !== undefined ? { cmd: "puback", messageId: ack.packetId, reasonCode: code } : { cmd: "puback", messageId: ack.packetId });
      }
    }
  } catch (err) {
    // No acknowledgement went out for this batch: the client retransmits after reconnecting.
    // Released QoS 2 messages it carried are stored still: the teardown routes them.
    log("error", "mqtt.route_failed", { clientId: att.clientId, error: errorMessage(err) });
    await link.close("serverError");
  } finally {
    state.routing = false;
  }
}

/**
 * One router call. The inbound store learns its outcome before anyone awaiting the call does
 * (the teardown waits for `routingCall`), so a message is routed by the call or by the teardown,
 * never by both.
 */
function routeCall(link: Link, messages: Message[], released: number[]): Promise<Routed[]> {
  const state = link.state;
  const call = link.services.router(link.att().account).publish(messages).then(
    (outcomes) => {
      state.inboundQos2.settle(released, true);
      return outcomes;
    },
    (err: unknown) => {
      state.inboundQos2.settle(released, false);
      throw err;
    },
  );
  state.routingCall = call;
  return call.finally(() => {
    if (state.routingCall === call) state.routingCall = null;
  });
}

/** Retained publishes the router refused (the account's retained quota is full): one `LimitExceeded` event per batch. */
async function reportQuota(link: Link, refused: number): Promise<void> {
  const att = link.att();
  const meta = await link.meta();
  log("warn", "mqtt.retained_quota_exceeded", { account: att.account, clientId: att.clientId, refused });
  const event = limitEvent(connectionFacts(meta), link.now(), "MAX_RETAINED_MESSAGES/MAX_RETAINED_BYTES", `${refused} retained publish(es) refused: the account's retained quota is full`);
  await link.services.router(att.account).publish([event]).catch((err: unknown) => log("warn", "mqtt.limit_event_failed", { clientId: att.clientId, error: errorMessage(err) }));
}
