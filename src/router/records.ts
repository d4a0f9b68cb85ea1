/** The router's stored records and their guards (storage reads come back as `unknown`). */
import { isRecord } from "../guards";
import { isQoS, type SubscriptionRequest } from "./messages";

/** Where a session's messages go: its connection object (hex id) while online, else (null) its session object's queue. */
export interface TargetRecord {
  conn: string | null;
  persistent: boolean;
}

/** What the trie keeps per subscription: the granted QoS and the MQTT 5 options. */
export type SubOptions = Omit<SubscriptionRequest, "filter">;

export function readSubOptions(v: unknown): SubOptions | null {
  if (isQoS(v)) return { qos: v }; // stored before MQTT 5 options existed
  if (!isRecord(v)) return null;
  const r = v;
  if (!isQoS(r.qos)) return null;
  const o: SubOptions = { qos: r.qos };
  if (r.nl === true) o.nl = true;
  if (r.rap === true) o.rap = true;
  if (r.rh === 1 || r.rh === 2) o.rh = r.rh;
  if (typeof r.id === "number") o.id = r.id;
  return o;
}

export function isTarget(v: unknown): v is TargetRecord {
  if (!isRecord(v)) return false;
  const r = v;
  return (typeof r.conn === "string" || r.conn === null) && typeof r.persistent === "boolean";
}
