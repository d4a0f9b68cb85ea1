/**
 * MQTT 5 PUBLISH properties, pure: the ones the broker reads, forwards and writes.
 */
import type { IPublishPacket, UserProperties } from "../protocol/codec";
import type { ForwardedProps, Message } from "../router/messages";

/** The topic alias maximum the broker offers MQTT 5 clients (inbound aliases). */
export const TOPIC_ALIAS_MAXIMUM = 32;

const fatalUtf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/** [MQTT-3.3.2-4]: a payload marked UTF-8 (payload format indicator 1) must be valid UTF-8. */
export function payloadFormatValid(payload: Uint8Array, indicator: boolean | undefined): boolean {
  if (!indicator) return true;
  try {
    fatalUtf8.decode(payload);
    return true;
  } catch {
    return false;
  }
}

/** The properties of a received PUBLISH that are forwarded unchanged to subscribers. */
export function forwardedProps(p: IPublishPacket["properties"]): ForwardedProps | undefined {
  if (!p) return undefined;
  const out: ForwardedProps = {};
  let any = false;
  if (p.payloadFormatIndicator !== undefined) {
    out.payloadFormatIndicator = p.payloadFormatIndicator;
    any = true;
  }
  if (p.contentType !== undefined) {
    out.contentType = p.contentType;
    any = true;
  }
  if (p.responseTopic !== undefined) {
    out.responseTopic = p.responseTopic;
    any = true;
  }
  if (p.correlationData !== undefined) {
    out.correlationData = new Uint8Array(p.correlationData);
    any = true;
  }
  if (p.userProperties) {
    // mqtt-packet groups repeated names into arrays; keep every pair, in order.
    const pairs: Array<{ key: string; value: string }> = [];
    for (const key of Object.keys(p.userProperties)) {
      const value: unknown = Reflect.get(p.userProperties, key);
      for (const v of Array.isArray(value) ? value : [value]) if (typeof v === "string") pairs.push({ key, value: v });
    }
    if (pairs.length > 0) {
      out.userProperties = pairs;
      any = true;
    }
  }
  return any ? out : undefined;
}

/**
 * User properties in mqtt-packet's shape (a name maps to a value, or to the values of a
 * repeated name). Names are data: the map has no prototype and every name is an own
 * property, so `__proto__`, `constructor` or `toString` are names like any other.
 */
export function userPropertyMap(pairs: ReadonlyArray<{ key: string; value: string }>): UserProperties {
  const map = Object.create(null) as Record<string, string | string[]>;
  for (const { key, value } of pairs) {
    const prev = Object.prototype.hasOwnProperty.call(map, key) ? map[key] : undefined;
    const next = prev === undefined ? value : Array.isArray(prev) ? [...prev, value] : [prev, value];
    Object.defineProperty(map, key, { value: next, enumerable: true, writable: true, configurable: true });
  }
  return map;
}

/**
 * The properties of an outgoing PUBLISH to an MQTT 5 client: forwarded ones, the remaining
 * message expiry [MQTT-3.3.2-6], and the matching subscription identifiers.
 */
export function publishProperties(m: Message, now: number): IPublishPacket["properties"] | undefined {
  const props: NonNullable<IPublishPacket["properties"]> = {};
  let any = false;
  const f = m.props;
  if (f) {
    if (f.payloadFormatIndicator !== undefined) props.payloadFormatIndicator = f.payloadFormatIndicator;
    if (f.contentType !== undefined) props.contentType = f.contentType;
    if (f.responseTopic !== undefined) props.responseTopic = f.responseTopic;
    if (f.correlationData !== undefined) props.correlationData = Buffer.from(f.correlationData);
    if (f.userProperties) {
      props.userProperties = userPropertyMap(f.userProperties);
    }
    any = true;
  }
  if (m.expiresAt !== undefined) {
    props.messageExpiryInterval = Math.max(0, Math.ceil((m.expiresAt - now) / 1000));
    any = true;
  }
  if (m.subIds && m.subIds.length > 0) {
    props.subscriptionIdentifier = m.subIds.length === 1 ? m.subIds[0] : m.subIds;
    any = true;
  }
  return any ? props : undefined;
}
