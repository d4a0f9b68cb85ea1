import type { Limits } from "../config";
import type { Attachment } from "./state";

/** Without a keep alive, the alarm checks this often that the socket still exists (a runtime restart closes no socket). */
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
  // One second of slack for the alarm's own delivery delay.
  return lastSeen + keepAliveSeconds * 1500 + 1000;
}

/**
 * When the one alarm should next run: the keep-alive deadline, the token expiry, or the
 * liveness check. Packets never move the alarm (a write per packet is what an idle fleet
 * would pay for): `lastSeen` lives in the socket attachment, and the alarm, when it runs,
 * finds the deadline moved and re-arms for it. So a talking client costs one alarm run and
 * one `setAlarm` per keep-alive period in the exact setting (`checkSeconds` 0), or one per
 * `checkSeconds` when that is longer: the alarm then runs at most that often, and a silent
 * client is closed up to `checkSeconds` after its deadline. The token expiry stays exact.
 */
export function nextAlarm(att: Pick<Attachment, "lastSeen" | "keepAlive" | "expiresAt">, now: number, checkSeconds = 0): number {
  const grain = checkSeconds * 1000;
  const deadline = keepAliveDeadline(att.lastSeen, att.keepAlive);
  // The deadline is a liveness check of its own (a socket gone without a close event is found then).
  let next = deadline === null ? now + Math.max(LIVENESS_CHECK_MS, grain) : Math.max(deadline, now + grain);
  if (att.expiresAt !== null) next = Math.min(next, att.expiresAt);
  return next;
}

/**
 * When the connection's alarm must next run, or null for never: with the shared keep-alive
 * clock watching it (KEEPALIVE_CLOCK = "shared"), only at its token's expiry (the clock keeps the
 * keep-alive deadline, and its sweep finds a socket a restart took); otherwise `nextAlarm`.
 */
export function alarmFor(att: Pick<Attachment, "lastSeen" | "keepAlive" | "expiresAt" | "clocked">, now: number, checkSeconds = 0): number | null {
  return att.clocked ? att.expiresAt : nextAlarm(att, now, checkSeconds);
}

/** Why the alarm ends a connection now, if it does. */
export type AlarmVerdict = "connectTimeout" | "keepAliveTimeout" | "tokenExpired" | null;

/** What the alarm finds at `now`: a socket without CONNECT past its time, a silent client, an expired token, or nothing. Pure. */
export function alarmVerdict(
  att: Pick<Attachment, "phase" | "openedAt" | "lastSeen" | "keepAlive" | "expiresAt">,
  now: number,
  connectTimeoutMs: number,
): AlarmVerdict {
  if (att.phase === "connecting") return now - att.openedAt >= connectTimeoutMs ? "connectTimeout" : null;
  const deadline = keepAliveDeadline(att.lastSeen, att.keepAlive);
  if (deadline !== null && now >= deadline) return "keepAliveTimeout";
  if (att.expiresAt !== null && now >= att.expiresAt) return "tokenExpired";
  return null;
}

/**
 * After CONNACK: the time to arm the alarm for, or null when the alarm armed at the upgrade
 * (the connect timeout, `alarmAt`) runs early enough to take over as the first keep-alive
 * check. It then re-arms itself, so a clean connect costs one `setAlarm`, not two.
 */
export function alarmAfterConnack(att: Pick<Attachment, "lastSeen" | "keepAlive" | "expiresAt" | "alarmAt" | "clocked">, now: number, checkSeconds = 0): number | null {
  const next = alarmFor(att, now, checkSeconds);
  // Nothing to check (a clock watches it, no token expiry): the connect-timeout alarm runs once and is not re-armed.
  if (next === null) return null;
  return att.alarmAt !== undefined && att.alarmAt <= next ? null : next;
}
