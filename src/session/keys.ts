/** Storage keys of the connection and session objects, built in one place. */

/** Connection object: identity and will from CONNECT (`state.ts` ConnMeta). */
export const META_KEY = "meta";
/** Connection object: browser credentials from the upgrade request, kept until CONNECT. */
export const BROWSER_KEY = "browser";
/** Connection object: a partial packet too large for the attachment. */
export const RX_KEY = "rx";
/** Connection object: the client's MQTT 5 topic aliases. */
export const ALIASES_KEY = "aliases";
/** Connection object: a session hand-back that failed at teardown, kept for its retry. */
export const PENDING_DETACH_KEY = "detach";
/** Connection object: retained deliveries on subscribe paused until the client acknowledges (`handlers/retained.ts`). */
export const RETAINED_KEY = "retained";
/** Connection object: outbound QoS 1/2 records, by sequence. */
export const OUT_PREFIX = "o:";
/** Connection object: inbound QoS 2 packet ids between PUBREC and PUBREL. */
export const INBOUND_PREFIX = "i:";
/** Session object: the offline queue, by sequence. */
export const QUEUE_PREFIX = "q:";
/** Session object: owner, queue bounds, expiry and delayed will (SessionMeta). */
export const SESSION_META_KEY = "meta";

const seqKey = (prefix: string, seq: number): string => `${prefix}${seq.toString().padStart(16, "0")}`;

export const outKey = (seq: number): string => seqKey(OUT_PREFIX, seq);
export const inboundKey = (pid: number): string => `${INBOUND_PREFIX}${pid}`;
export const queueKey = (seq: number): string => seqKey(QUEUE_PREFIX, seq);
