/**
 * The acknowledgements a client sends: PUBACK and PUBREC/PUBCOMP for the broker's
 * deliveries (outbox), PUBREL for the client's own QoS 2 publishes, and PINGREQ.
 */
import type { IPubackPacket, IPubcompPacket, IPubrecPacket, IPubrelPacket } from "../../protocol/codec";
import { V5 } from "../../protocol/codes";
import type { AckResult } from "../outbox";
import type { Link } from "../link";
import { transmit } from "./deliver";
import { releaseInbound } from "./publish";
import { resumeRetained } from "./retained";
import { spendPacket } from "../budget";

/** PUBACK ends a QoS 1 delivery [MQTT-4.3.2]; the window may admit the next message. */
export async function onPuback(link: Link, packet: IPubackPacket): Promise<void> {
  await settle(link, await link.state.outbox.complete(packet.messageId ?? 0, "puback"), "puback");
}

/**
 * [MQTT-4.3.3-4]: PUBREC is answered with PUBREL, once the state change is durable. A PUBREC
 * with a reason code of 0x80 or more ends the delivery without PUBREL (MQTT 5 §4.3.3). A PUBREC
 * for an id with no delivery still gets its PUBREL (MQTT 5: reason 0x92 Packet Identifier not
 * found), so the client can finish its side; a failed one for such an id gets nothing.
 */
export async function onPubrec(link: Link, packet: IPubrecPacket): Promise<void> {
  const pid = packet.messageId ?? 0;
  const v5 = link.att().protocolVersion === 5;
  const failed = v5 && (packet.reasonCode ?? 0) >= 0x80;
  const result = await link.state.outbox.received(pid, failed);
  if (result.kind === "released") link.send({ cmd: "pubrel", messageId: pid });
  else if (result.kind === "unknown") {
    if (!spendPacket(link, "pubrec")) return link.close("rateExceeded");
    if (!failed) link.send(v5 ? { cmd: "pubrel", messageId: pid, reasonCode: V5.packetIdNotFound } : { cmd: "pubrel", messageId: pid });
  } else await settle(link, result, "pubrec");
}

/** PUBCOMP ends a QoS 2 delivery after its PUBREL [MQTT-4.3.3]. */
export async function onPubcomp(link: Link, packet: IPubcompPacket): Promise<void> {
  await settle(link, await link.state.outbox.complete(packet.messageId ?? 0, "pubcomp"), "pubcomp");
}

/**
 * Applies the outcome of an acknowledgement that may end a delivery: the next messages go out;
 * one for an id with no delivery is ignored (a late duplicate); one that is not this delivery's
 * (PUBREC for QoS 1, PUBACK for QoS 2, PUBCOMP before PUBREL) is a protocol error, as mosquitto has it.
 * One that acknowledges nothing is charged to the packet budget (a flood of them is the client's own).
 */
async function settle(link: Link, result: AckResult, cmd: "puback" | "pubrec" | "pubcomp"): Promise<void> {
  if (result.kind === "done") {
    await transmit(link, result.next);
    await resumeRetained(link);
  } else if (result.kind === "unexpected") await link.close("protocolError");
  else if (result.kind === "unknown" && !spendPacket(link, cmd)) await link.close("rateExceeded");
}

/** PUBREL releases an inbound QoS 2 message: now it is routed, then PUBCOMP (`publish.ts`). */
export function onPubrel(link: Link, packet: IPubrelPacket): Promise<void> {
  return releaseInbound(link, packet.messageId ?? 0);
}

/** [MQTT-3.12.4-1]: PINGREQ is answered with PINGRESP. */
export function onPingreq(link: Link): void {
  link.send({ cmd: "pingresp" });
}
