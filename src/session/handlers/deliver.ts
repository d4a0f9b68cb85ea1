/**
 * Delivery to the client: messages from the router or the session object become PUBLISH
 * packets. QoS 0 goes out at once; QoS 1/2 are made durable in the outbox first, then sent
 * within the in-flight window [MQTT-4.3.2, MQTT-4.3.3].
 */
import type { IPublishPacket } from "../../protocol/codec";
import { encodePacket } from "../../protocol/codec";
import { errorMessage, log } from "../../log";
import type { Message } from "../../router/messages";
import type { OutAction } from "../outbox";
import { publishProperties } from "../properties";
import type { Link } from "../link";

/**
 * Takes messages for the client. Before CONNACK nothing is sent: QoS 0 waits in `early`, and
 * the connect flow sends every stored flow in order once CONNACK is out.
 */
export async function deliverMessages(link: Link, messages: Message[]): Promise<void> {
  const att = link.att();
  const durable: Message[] = [];
  for (const m of messages) {
    if (m.qos === 0) {
      if (att.phase === "connected") sendPublish(link, m, 0, false);
      else link.state.early.push(m);
    } else durable.push(m);
  }
  if (durable.length === 0) return;
  const outbox = link.state.outbox;
  const droppedBefore = outbox.dropped;
  const actions = await outbox.add(durable);
  if (outbox.dropped > droppedBefore) {
    // The client does not acknowledge fast enough: its own messages go, nobody else's.
    log("warn", "mqtt.outbox_full", { clientId: att.clientId, dropped: outbox.dropped - droppedBefore, droppedSinceWake: outbox.dropped });
  }
  if (att.phase === "connected") await transmit(link, actions);
}

/** Puts outbox decisions on the wire; a message that cannot be sent (expired, too large) is done. */
export async function transmit(link: Link, actions: OutAction[]): Promise<void> {
  let next = actions;
  while (next.length > 0) {
    const dropped: number[] = [];
    for (const action of next) {
      if (action.kind === "pubrel") link.send({ cmd: "pubrel", messageId: action.pid });
      else if (!sendPublish(link, action.record.message, action.record.pid, action.record.dup)) dropped.push(action.record.pid);
    }
    next = [];
    for (const pid of dropped) next.push(...(await link.state.outbox.drop(pid)));
  }
}

/**
 * Sends one PUBLISH (`pid` 0: QoS 0). Returns false when it was not sent: expired (MQTT 5
 * message expiry [MQTT-3.3.2-5]) or larger than the client's Maximum Packet Size
 * [MQTT-3.1.2-25]; the caller then treats a QoS > 0 message as done.
 */
export function sendPublish(link: Link, m: Message, pid: number, dup: boolean): boolean {
  const att = link.att();
  const now = link.now();
  if (m.expiresAt !== undefined && m.expiresAt <= now) return false;
  const packet: IPublishPacket = {
    cmd: "publish",
    topic: m.topic,
    payload: m.payload instanceof Buffer ? m.payload : Buffer.from(m.payload.buffer, m.payload.byteOffset, m.payload.byteLength),
    qos: pid === 0 ? 0 : m.qos,
    retain: m.retain,
    dup: dup && pid !== 0, // [MQTT-3.3.1-2]: DUP only on a redelivery of QoS > 0
    messageId: pid === 0 ? undefined : pid,
  };
  if (att.protocolVersion === 5) {
    const properties = publishProperties(m, now);
    if (properties) packet.properties = properties;
  }
  let bytes: Uint8Array;
  try {
    bytes = encodePacket(packet, att.protocolVersion);
  } catch (err) {
    // A message this client cannot be sent is dropped for this client alone, and done
    // (never retried from storage): the others and the connection are untouched.
    link.state.undeliverable++;
    log("warn", "mqtt.encode_failed", { clientId: att.clientId, topic: m.topic, error: errorMessage(err), dropped: link.state.undeliverable });
    return false;
  }
  if (att.maxPacketOut > 0 && bytes.byteLength > att.maxPacketOut) {
    log("info", "mqtt.too_large_for_client", { clientId: att.clientId, topic: m.topic, bytes: bytes.byteLength, max: att.maxPacketOut });
    return false;
  }
  link.sendBytes(bytes);
  return true;
}
