/**
 * The acknowledgements a client sends: PUBACK and PUBREC/PUBCOMP for the broker's
 * deliveries (outbox), PUBREL for the client's own QoS 2 publishes, and PINGREQ.
 */
import type { IPubackPacket, IPubcompPacket, IPubrecPacket, IPubrelPacket } from "../../protocol/codec";
import type { Link } from "../link";
import { transmit } from "./deliver";

/** PUBACK ends a QoS 1 delivery [MQTT-4.3.2]; the window may admit the next message. */
export async function onPuback(link: Link, packet: IPubackPacket): Promise<void> {
  await transmit(link, await link.state.outbox.complete(packet.messageId ?? 0, "puback"));
}

/** [MQTT-4.3.3-4]: PUBREC is answered with PUBREL, once the state change is durable. */
export async function onPubrec(link: Link, packet: IPubrecPacket): Promise<void> {
  if (await link.state.outbox.received(packet.messageId ?? 0)) link.send({ cmd: "pubrel", messageId: packet.messageId });
}

/** PUBCOMP ends a QoS 2 delivery [MQTT-4.3.3]. */
export async function onPubcomp(link: Link, packet: IPubcompPacket): Promise<void> {
  await transmit(link, await link.state.outbox.complete(packet.messageId ?? 0, "pubcomp"));
}

/**
 * Inbound QoS 2 ends here; the message was routed on PUBLISH. PUBCOMP even for an unknown
 * id: the client may be resending after our PUBCOMP was lost [MQTT-4.3.3-11].
 */
export async function onPubrel(link: Link, packet: IPubrelPacket): Promise<void> {
  await link.state.inboundQos2.release(packet.messageId ?? 0);
  link.send({ cmd: "pubcomp", messageId: packet.messageId });
}

/** [MQTT-3.12.4-1]: PINGREQ is answered with PINGRESP. */
export function onPingreq(link: Link): void {
  link.send({ cmd: "pingresp" });
}
