/** The client's packet budget: every packet it starts counts, across reconnects (the bucket travels with the session). */
import type { Packet } from "../protocol/codec";
import { log } from "../log";
import { fullBucket, take } from "../limits/rate";
import type { Link } from "./link";

/**
 * Takes one packet from the client's packet budget (PACKET_RATE_PER_SECOND, PACKET_BURST);
 * false when it is spent. Acknowledgements of the broker's deliveries are charged only when
 * they acknowledge nothing (`acks.ts`): those are the client's own packets.
 */
export function spendPacket(link: Link, cmd: Packet["cmd"]): boolean {
  const att = link.att();
  const limits = link.config.limits;
  att.packets ??= fullBucket(limits.packetBurst, link.now());
  if (take(att.packets, limits.packetRatePerSecond, limits.packetBurst, link.now())) return true;
  log("warn", "mqtt.packet_rate_exceeded", { account: att.account, clientId: att.clientId, cmd, rate: limits.packetRatePerSecond });
  return false;
}
