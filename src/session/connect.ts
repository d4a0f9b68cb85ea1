import type { Config } from "../config";
import { ConnackCode, type CloseCause } from "../protocol/codes";
import type { IConnectPacket } from "../protocol/codec";
import { utf8ByteLength, validateTopicName } from "../topics/topic";
import { toBytes } from "../protocol/bytes";
import type { Message } from "../router/messages";

export type ConnectDecision =
  | { ok: true; account: string; clientId: string; will: Message | null }
  | { ok: false; code: ConnackCode; cause: CloseCause; reason: string };

function refuse(code: ConnackCode, cause: CloseCause, reason: string): ConnectDecision {
  return { ok: false, code, cause, reason };
}

/**
 * The CONNECT steps that decide acceptance, in spec order: client id, will, credentials.
 * Pure: the connection object applies the decision.
 */
export function authenticateConnect(packet: IConnectPacket, config: Config): ConnectDecision {
  const clean = packet.clean !== false;
  let clientId = packet.clientId ?? "";
  if (clientId === "") {
    // [MQTT-3.1.3-8]: an empty client id needs clean session; [MQTT-3.1.3-6]: the server assigns one.
    if (!clean) return refuse(ConnackCode.IdentifierRejected, "invalidClientId", "empty client id requires clean session");
    clientId = `auto-${crypto.randomUUID()}`;
  }
  if (utf8ByteLength(clientId) > config.limits.maxClientIdBytes) {
    return refuse(ConnackCode.IdentifierRejected, "invalidClientId", "client id too long");
  }

  let will: Message | null = null;
  if (packet.will) {
    if (validateTopicName(packet.will.topic, config.limits) !== null) {
      return refuse(ConnackCode.NotAuthorized, "invalidTopic", "invalid will topic");
    }
    const payload = toBytes(packet.will.payload ?? "");
    if (payload.byteLength > config.limits.maxPayloadBytes) {
      return refuse(ConnackCode.NotAuthorized, "tooLarge", "will payload too large");
    }
    will = { topic: packet.will.topic, payload, qos: packet.will.qos === 0 ? 0 : 1, retain: packet.will.retain === true };
  }

  // Credentials: until the identity layer lands, anonymous clients land in the configured account.
  const account = config.anonymousAccount;
  if (account === undefined) return refuse(ConnackCode.NotAuthorized, "notAuthorized", "anonymous access is off");
  return { ok: true, account, clientId, will };
}
