/**
 * PUBLISH from the client: the checks, in the order the spec puts them, then the batcher
 * that hands publishes to the account's router. At most one router call is in flight;
 * publishes arriving meanwhile travel together in the next call, in order. A QoS 1/2
 * publish is acknowledged only after the router call that carried it resolved (every copy
 * durable); when it fails, no acknowledgement goes out and the connection closes, so the
 * client resends.
 */
import type { IPublishPacket } from "../../protocol/codec";
import { V5 } from "../../protocol/codes";
import { toBytes } from "../../protocol/bytes";
import { errorMessage, log } from "../../log";
import type { Message } from "../../router/messages";
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
    if (resolved === null) return link.close("topicAliasInvalid");
    topic = resolved;
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
  if (packetId !== undefined && state.inboundPending >= limits.maxInflight && att.protocolVersion === 5) {
    // [MQTT-3.3.4-7]: more unacknowledged QoS > 0 publishes than the Receive Maximum we announced.
    return link.close("receiveMaximumExceeded");
  }
  const { identity } = await link.meta();
  const pending = decidePublish(packet, topic, payload, identity.acl, att.clientId, link.now());
  if (pending.reason === V5.payloadFormatInvalid) log("info", "mqtt.payload_format_invalid", { account: att.account, clientId: att.clientId, topic });
  if (pending.reason === V5.notAuthorized) log("info", "mqtt.publish_denied", { account: att.account, clientId: att.clientId, topic });
  if (packet.qos === 2 && packetId !== undefined) {
    // A retransmission of a QoS 2 message already received is answered, not routed again
    // [MQTT-4.3.3-10]: exactly once.
    if (state.qos2Routing.has(packetId) || (await state.inboundQos2.has(packetId))) pending.message = null;
    else if (pending.message) state.qos2Routing.add(packetId);
  }
  if (packetId !== undefined) state.inboundPending++;
  state.publishQueue.push(pending);
  if (!state.flushing) {
    state.flushing = flushPublishes(link).finally(() => {
      state.flushing = null;
    });
  }
}

/**
 * What to do with one valid PUBLISH: the message to route, or null with the MQTT 5 reason
 * of its acknowledgement (payload format invalid, not authorized). 3.1.1 has no negative
 * PUBACK: a refused QoS 1/2 publish is acknowledged and dropped, in order with the others
 * [MQTT-4.6.0-2]. Pure.
 */
export function decidePublish(packet: IPublishPacket, topic: string, payload: Uint8Array, acl: Acl, clientId: string, now: number): PendingPublish {
  const props = packet.properties;
  const packetId = packet.qos > 0 ? packet.messageId : undefined;
  if (!payloadFormatValid(payload, props?.payloadFormatIndicator)) {
    return { message: null, packetId, qos: packet.qos, reason: V5.payloadFormatInvalid };
  }
  if (!canPublish(acl, topic)) return { message: null, packetId, qos: packet.qos, reason: V5.notAuthorized };
  const message: Message = { topic, payload, qos: packet.qos, retain: packet.retain, from: clientId };
  if (props) {
    const forwarded = forwardedProps(props);
    if (forwarded) message.props = forwarded;
    if (props.messageExpiryInterval !== undefined) message.expiresAt = now + props.messageExpiryInterval * 1000;
  }
  return { message, packetId, qos: packet.qos, reason: undefined };
}

/** Sends queued publishes to the router, one call at a time, then their acknowledgements. */
export async function flushPublishes(link: Link): Promise<void> {
  const state = link.state;
  const att = link.att();
  try {
    while (state.publishQueue.length > 0 && !state.closing) {
      const batch = state.publishQueue;
      state.publishQueue = [];
      const messages = batch.flatMap((p) => (p.message ? [p.message] : []));
      if (messages.length > 0) await link.services.router(att.account).publish(messages);
      // QoS 2 ids are durable before PUBREC goes out, so a retransmission after a crash is still recognized.
      const qos2 = batch.flatMap((p) => (p.qos === 2 && p.packetId !== undefined ? [p.packetId] : []));
      await state.inboundQos2.add(qos2);
      for (const pid of qos2) state.qos2Routing.delete(pid);
      for (const { packetId, qos, reason } of batch) {
        if (packetId === undefined) continue;
        state.inboundPending--;
        if (att.protocolVersion === 5 && reason !== undefined) {
          // A PUBREC with a reason code >= 0x80 ends its exchange [MQTT-4.3.3-9].
          link.send({ cmd: qos === 2 ? "pubrec" : "puback", messageId: packetId, reasonCode: reason });
          if (qos === 2) await state.inboundQos2.release(packetId);
        } else link.send({ cmd: qos === 2 ? "pubrec" : "puback", messageId: packetId });
      }
    }
  } catch (err) {
    // No acknowledgement went out for this batch: the client retransmits after reconnecting.
    log("error", "mqtt.route_failed", { clientId: att.clientId, error: errorMessage(err) });
    await link.close("serverError");
  }
}

/** Waits until every publish received so far has been routed (or the connection closed). */
export async function drainPublishes(link: Link): Promise<void> {
  while (link.state.flushing) await link.state.flushing;
}
