/**
 * DISCONNECT from the client. MQTT 5: reason 0x04 asks for the will to be published, and the
 * session expiry may change, but not from 0 to more [MQTT-3.14.2-2].
 */
import type { IDisconnectPacket } from "../../protocol/codec";
import type { Link } from "../link";
import { drainPublishes } from "./publish";

export async function onDisconnect(link: Link, packet: IDisconnectPacket): Promise<void> {
  // Publishes sent right before DISCONNECT (publish-then-disconnect, every command-line
  // publisher) are routed before the close, QoS 0 included.
  await drainPublishes(link);
  if (link.att().protocolVersion === 5) {
    const meta = await link.meta();
    const expiry = packet.properties?.sessionExpiryInterval;
    if (expiry !== undefined) {
      if (meta.expirySeconds === 0 && expiry > 0) return link.close("protocolError");
      meta.expirySeconds = Math.min(expiry, link.config.limits.sessionExpirySeconds);
      await link.saveMeta(meta);
    }
    if (packet.reasonCode === 0x04) return link.close("clientDisconnectWithWill");
  }
  return link.close("clientDisconnect");
}
