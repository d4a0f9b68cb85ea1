/**
 * SUBSCRIBE and UNSUBSCRIBE: a pure plan of each filter's answer (syntax, limits, ACL), the
 * router call, then SUBACK, the limit events and the retained messages [MQTT-3.8.4].
 */
import type { Limits } from "../../config";
import type { ISubscribePacket, IUnsubscribePacket, ProtocolVersion } from "../../protocol/codec";
import { V5, subackFailure } from "../../protocol/codes";
import { log } from "../../log";
import { limitEvent } from "../../monitoring/events";
import type { Message, QoS, Subscribed, SubscriptionRequest } from "../../router/messages";
import { canSubscribe, type Acl } from "../../topics/acl";
import { validateTopicFilter } from "../../topics/topic";
import { connectionFacts } from "../state";
import type { Link } from "../link";
import { deliverRetained, retainedPageMessages } from "./retained";

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

export async function onSubscribe(link: Link, packet: ISubscribePacket): Promise<void> {
  const att = link.att();
  const limits = link.config.limits;
  if (!packet.messageId) return link.close("protocolError");
  const meta = await link.meta();
  const plan = planSubscribe(packet, meta.identity.acl, limits, att.protocolVersion);
  if (!plan.ok) return link.close("protocolError");
  const { codes, requests, slots } = plan;
  for (const filter of plan.denied) log("info", "mqtt.subscribe_denied", { account: att.account, clientId: att.clientId, filter });
  const router = link.services.router(att.account);
  let retained: Subscribed | null = null;
  const limitEvents: Message[] = [];
  if (packet.subscriptions.length > limits.maxFiltersPerSubscribe) {
    const past = packet.subscriptions.length - limits.maxFiltersPerSubscribe;
    limitEvents.push(limitEvent(connectionFacts(meta), link.now(), "MAX_FILTERS_PER_SUBSCRIBE", `${past} filter(s) past the limit refused`));
  }
  if (requests.length > 0) {
    const result = await router.subscribe(att.clientId, requests, limits.maxSubscriptions, { pageMessages: retainedPageMessages(limits) });
    let refused = 0;
    result.granted.forEach((ok, i) => {
      const at = slots[i];
      if (!ok && at !== undefined) {
        codes[at] = subackFailure(att.protocolVersion, V5.quotaExceeded);
        refused++;
      }
    });
    if (refused > 0) limitEvents.push(limitEvent(connectionFacts(meta), link.now(), "MAX_SUBSCRIPTIONS", `${refused} subscription(s) past the limit refused`));
    retained = result;
  }
  link.send({ cmd: "suback", messageId: packet.messageId, granted: codes });
  if (limitEvents.length > 0) await router.publish(limitEvents);
  if (retained) await deliverRetained(link, retained.retained, retained.more);
}

/** UNSUBSCRIBE: MQTT 5 says per filter whether a subscription existed [MQTT-3.11.3]. */
export async function onUnsubscribe(link: Link, packet: IUnsubscribePacket): Promise<void> {
  const att = link.att();
  if (!packet.messageId) return link.close("protocolError");
  // A 3.1 UNSUBSCRIBE may carry no filter: nothing to ask the router.
  const existed = packet.unsubscriptions.length === 0 ? [] : await link.services.router(att.account).unsubscribe(att.clientId, packet.unsubscriptions);
  const granted = att.protocolVersion === 5 ? existed.map((e) => (e ? V5.success : V5.noSubscriptionExisted)) : [];
  link.send({ cmd: "unsuback", messageId: packet.messageId, granted });
}
