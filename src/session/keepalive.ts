import type { Limits } from "../config";
import type { Attachment } from "./state";

/** Even without a keep alive, the alarm checks this often that the socket still exists. */
export const LIVENESS_CHECK_MS = 5 * 60_000;

/**
 * Keep alive outside the configured range is clamped (3.1.1 has no way to tell the client;
 * MQTT 5 will answer with Server Keep Alive). 0 means off, unless a minimum is configured.
 */
export function clampKeepAlive(requested: number, limits: Pick<Limits, "keepAliveMinSeconds" | "keepAliveMaxSeconds">): number {
  if (requested === 0) return limits.keepAliveMinSeconds > 0 ? limits.keepAliveMinSeconds : 0;
  return Math.min(Math.max(requested, limits.keepAliveMinSeconds), limits.keepAliveMaxSeconds);
}

/** [MQTT-3.1.2-24]: the server disconnects after one and a half keep-alive periods of silence. */
export function keepAliveDeadline(lastSeen: number, keepAliveSeconds: number): number | null {
  if (keepAliveSeconds <= 0) return null;
  // lastSeen is kept to about a second (the attachment is not rewritten on every packet),
  // so allow that second of slack.
  return lastSeen + keepAliveSeconds * 1500 + 1000;
}

/** When the one alarm should next run: the keep-alive deadline, the token expiry, or the liveness check. */
export function nextAlarm(att: Pick<Attachment, "lastSeen" | "keepAlive" | "expiresAt">, now: number): number {
  let next = now + LIVENESS_CHECK_MS;
  const deadline = keepAliveDeadline(att.lastSeen, att.keepAlive);
  if (deadline !== null) next = Math.min(next, deadline);
  if (att.expiresAt !== null) next = Math.min(next, att.expiresAt);
  return next;
}
