/**
 * One dispatch on the packet type: the packet rate first (every packet the client starts
 * counts), then the first packet must be CONNECT, then one handler per type.
 */
import type { Packet } from "../protocol/codec";
import type { Link } from "./link";
import { spendPacket } from "./budget";
import { onConnect } from "./handlers/connect";
import { onPublish } from "./handlers/publish";
import { onPuback, onPubcomp, onPubrec, onPubrel, onPingreq } from "./handlers/acks";
import { onSubscribe, onUnsubscribe } from "./handlers/subscribe";
import { onDisconnect } from "./handlers/disconnect";

/** Acknowledgements of the broker's own deliveries: their number is bounded by the in-flight window, not by the client (one that acknowledges nothing is charged in `acks.ts`). */
const DELIVERY_ACKS: ReadonlySet<Packet["cmd"]> = new Set(["puback", "pubrec", "pubcomp"]);

export async function dispatch(link: Link, packet: Packet): Promise<void> {
  if (!DELIVERY_ACKS.has(packet.cmd) && !spendPacket(link, packet.cmd)) return link.close("rateExceeded");
  if (link.att().phase === "connecting") {
    // [MQTT-3.1.0-1]: the first packet must be CONNECT.
    if (packet.cmd !== "connect") return link.close("protocolError");
    return onConnect(link, packet);
  }
  switch (packet.cmd) {
    case "connect":
      return link.close("protocolError"); // [MQTT-3.1.0-2]: a second CONNECT
    case "publish":
      return onPublish(link, packet);
    case "puback":
      return onPuback(link, packet);
    case "pubrec":
      return onPubrec(link, packet);
    case "pubcomp":
      return onPubcomp(link, packet);
    case "pubrel":
      return onPubrel(link, packet);
    case "subscribe":
      return onSubscribe(link, packet);
    case "unsubscribe":
      return onUnsubscribe(link, packet);
    case "pingreq":
      return onPingreq(link);
    case "disconnect":
      return onDisconnect(link, packet);
    default:
      // Server-to-client packet types from a client are a protocol violation.
      return link.close("protocolError");
  }
}

