import type { Limits } from "../config";
import type { ISubscribePacket, ProtocolVersion } from "../protocol/codec";
import { SUBACK_FAILURE } from "../protocol/codes";
import type { QoS, SubscriptionRequest } from "../router/messages";
import { canSubscribe, type Acl } from "../topics/acl";
import { validateTopicFilter } from "../topics/topic";
import { V5 } from "./v5";

/** What to do with one SUBSCRIBE, decided before the router is asked. */
export type SubscribePlan =
  | {
      ok: true;
      /** SUBACK codes in filter order; granted QoS where a request goes to the router. */
      codes: number[];
      /** The requests for the router, in order. */
      requests: SubscriptionRequest[];
      /** For each request, its index in `codes` (the router may still refuse it: quota). */
      slots: number[];
      /** Filters the ACL refused (for the log). */
      denied: string[];
    }
  /** A protocol error: the connection closes [MQTT-3.8.3-4]. */
  | { ok: false };

/** The SUBACK failure code: 3.1.1 has one; MQTT 5 says why. */
export function subackFailure(version: ProtocolVersion, v5code: number): number {
  return version === 5 ? v5code : SUBACK_FAILURE;
}

/**
 * Validates each filter of a SUBSCRIBE, in order: the per-packet filter limit, filter
 * syntax and limits, the ACL; then builds the router requests with the MQTT 5 options
 * (no local, retain as published, retain handling, subscription identifier). Pure.
 */
export function planSubscribe(packet: ISubscribePacket, acl: Acl, limits: Limits, version: ProtocolVersion): SubscribePlan {
  const v5 = version === 5;
  const subId = v5 ? packet.properties?.subscriptionIdentifier : undefined;
  const codes: number[] = [];
  const requests: SubscriptionRequest[] = [];
  const slots: number[] = [];
  const denied: string[] = [];
  for (const [i, sub] of packet.subscriptions.entries()) {
    if (i >= limits.maxFiltersPerSubscribe) {
      codes.push(subackFailure(version, V5.quotaExceeded));
      continue;
    }
    if (validateTopicFilter(sub.topic, limits) !== null) {
      codes.push(subackFailure(version, V5.topicFilterInvalid));
      continue;
    }
    // [MQTT-3.8.3-4]: no local on a shared subscription is a protocol error.
    if (v5 && sub.nl && sub.topic.startsWith("$share/")) return { ok: false };
    if (!canSubscribe(acl, sub.topic)) {
      denied.push(sub.topic);
      codes.push(subackFailure(version, V5.notAuthorized));
      continue;
    }
    const qos: QoS = sub.qos === 2 ? 2 : sub.qos === 1 ? 1 : 0;
    slots.push(codes.length);
    codes.push(qos);
    const request: SubscriptionRequest = { filter: sub.topic, qos };
    if (v5) {
      if (sub.nl) request.nl = true;
      if (sub.rap) request.rap = true;
      if (sub.rh === 1 || sub.rh === 2) request.rh = sub.rh;
      if (subId !== undefined) request.id = subId;
    }
    requests.push(request);
  }
  return { ok: true, codes, requests, slots, denied };
}
