/**
 * The account's retained messages [MQTT-3.3.1-5]: one per topic, in storage under `r:<topic>`
 * and in memory, with the bound on retained monitoring events.
 */
import { isRecord } from "../guards";
import { MONITOR_PREFIX } from "../monitoring/events";
import { topicMatches } from "../topics/topic";
import { isQoS, type ForwardedProps, type Message, type QoS } from "./messages";
import { KEY, retainedKey } from "./keys";

interface RetainedRecord {
  payload: Uint8Array;
  qos: QoS;
  props?: ForwardedProps;
  expiresAt?: number;
}

/** One retained message as the admin views page through them. */
export interface RetainedEntry {
  topic: string;
  qos: QoS;
  payload: Uint8Array;
  expiresAt?: number;
}

function isRetained(v: unknown): v is RetainedRecord {
  return isRecord(v) && v.payload instanceof Uint8Array && isQoS(v.qos);
}

export class RetainedStore {
  private readonly records = new Map<string, RetainedRecord>();
  /** Retained monitoring topics, oldest first (Set order). */
  private readonly monitorOrder = new Set<string>();

  constructor(
    private readonly storage: DurableObjectStorage,
    /** Retained `$SYS/mon` events kept at most (MAX_MONITOR_RETAINED). */
    private readonly maxMonitor: () => number,
  ) {}

  async load(): Promise<void> {
    for (const [key, value] of await this.storage.list({ prefix: KEY.retained })) {
      if (!isRetained(value)) continue;
      const topic = key.slice(KEY.retained.length);
      this.records.set(topic, value);
      if (topic.startsWith(MONITOR_PREFIX)) this.monitorOrder.add(topic);
    }
  }

  get size(): number {
    return this.records.size;
  }

  /** [MQTT-3.3.1-10]/[MQTT-3.3.1-11]: an empty retained payload deletes; otherwise replace. */
  store(message: Message): void {
    if (message.payload.byteLength === 0) {
      this.records.delete(message.topic);
      this.monitorOrder.delete(message.topic);
      void this.storage.delete(retainedKey(message.topic));
      return;
    }
    const record: RetainedRecord = { payload: message.payload, qos: message.qos };
    if (message.props) record.props = message.props;
    if (message.expiresAt !== undefined) record.expiresAt = message.expiresAt;
    this.records.set(message.topic, record);
    void this.storage.put(retainedKey(message.topic), record);
    if (message.topic.startsWith(MONITOR_PREFIX)) this.boundMonitorEvents(message.topic);
  }

  /**
   * The unexpired retained messages a new subscription matches, in topic order (the same
   * before and after a restart), with the retain flag set [MQTT-3.3.1-8] and the QoS
   * downgraded to the granted one.
   */
  matching(filter: string, qos: QoS, subId: number | undefined, now: number): Message[] {
    const out: Message[] = [];
    const topics = [...this.records.keys()].filter((topic) => topicMatches(filter, topic)).sort();
    for (const topic of topics) {
      const record = this.records.get(topic);
      if (!record || (record.expiresAt !== undefined && record.expiresAt <= now)) continue;
      const m: Message = { topic, payload: record.payload, qos: record.qos < qos ? record.qos : qos, retain: true };
      if (record.props) m.props = record.props;
      if (record.expiresAt !== undefined) m.expiresAt = record.expiresAt;
      if (subId !== undefined) m.subIds = [subId];
      out.push(m);
    }
    return out;
  }

  /**
   * Retained monitoring events are one per client id; client ids are the clients' choice, so
   * the account keeps at most MAX_MONITOR_RETAINED of them: past it the oldest goes.
   */
  private boundMonitorEvents(topic: string): void {
    this.monitorOrder.delete(topic);
    this.monitorOrder.add(topic);
    const max = this.maxMonitor();
    for (const oldest of this.monitorOrder) {
      if (this.monitorOrder.size <= max) break;
      this.monitorOrder.delete(oldest);
      this.records.delete(oldest);
      void this.storage.delete(retainedKey(oldest));
    }
  }

  // --- admin views (GET/DELETE /admin/v1/accounts/<id>/retained, stats) ---

  /**
   * Up to `limit` unexpired retained messages matching `filter` whose topic sorts after
   * `after`, in topic order, and whether more follow.
   */
  page(filter: string, after: string | undefined, limit: number, now: number): { items: RetainedEntry[]; more: boolean } {
    const topics = [...this.records.keys()].filter((t) => (after === undefined || t > after) && topicMatches(filter, t)).sort();
    const items: RetainedEntry[] = [];
    for (const topic of topics) {
      const record = this.records.get(topic);
      if (!record || (record.expiresAt !== undefined && record.expiresAt <= now)) continue;
      if (items.length === limit) return { items, more: true };
      items.push({ topic, qos: record.qos, payload: record.payload, ...(record.expiresAt === undefined ? {} : { expiresAt: record.expiresAt }) });
    }
    return { items, more: false };
  }

  /** Removes the retained message of `topic`; false when there was none. */
  delete(topic: string): boolean {
    if (!this.records.has(topic)) return false;
    this.store({ topic, payload: new Uint8Array(0), qos: 0, retain: true });
    return true;
  }

  /** Payload plus topic bytes of every retained message (`messageBytes`). */
  bytes(): number {
    let total = 0;
    for (const [topic, record] of this.records) total += record.payload.byteLength + topic.length;
    return total;
  }
}
