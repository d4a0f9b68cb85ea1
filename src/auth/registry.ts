/**
 * The device registry in D1 (`migrations/0002_devices.sql`). Device ids are unique across
 * accounts: at CONNECT the device id alone finds the device, and with it the account.
 */

import { generateDeviceId, generatePassword, hashPassword, isValidDeviceId, verifyPassword } from "./passwords";

/** A provisioned device as the admin API shows it (never with its password hash). */
export interface Device {
  accountId: string;
  deviceId: string;
  disabled: boolean;
  createdAt: string;
  updatedAt: string;
}

/** A device with its stored password hash, for authentication only. */
export type DeviceRecord = Device & { passwordHash: string };

/** The outcome of {@link createDevice}; the password exists only in this value. */
export type CreateDeviceResult =
  | { ok: true; device: Device; password: string }
  | { ok: false; error: "exists" | "invalid_device_id" };

/** The outcome of {@link authenticateDevice}. */
export type AuthenticateResult =
  | { ok: true; device: Device }
  | { ok: false; reason: "unknown" | "bad_password" | "disabled" };

const COLUMNS = "device_id, account_id, password_hash, disabled, created_at, updated_at";

/** Generated ids collide with negligible probability; a few retries make that a non-event. */
const GENERATED_ID_ATTEMPTS = 3;

/**
 * Registers a device in `accountId` with a fresh password. Without `deviceId`, one is
 * generated. The account id is the caller's to validate.
 */
export async function createDevice(
  db: D1Database,
  pepper: string,
  accountId: string,
  deviceId?: string,
): Promise<CreateDeviceResult> {
  if (deviceId !== undefined && !isValidDeviceId(deviceId)) return { ok: false, error: "invalid_device_id" };
  const password = generatePassword();
  const passwordHash = await hashPassword(pepper, password);
  const attempts = deviceId === undefined ? GENERATED_ID_ATTEMPTS : 1;
  for (let i = 0; i < attempts; i++) {
    const id = deviceId ?? generateDeviceId();
    const now = new Date().toISOString();
    // INSERT OR IGNORE rather than catching a constraint error: D1 reports those only as message text.
    const result = await db
      .prepare(
        "INSERT OR IGNORE INTO devices (device_id, account_id, password_hash, disabled, created_at, updated_at) VALUES (?, ?, ?, 0, ?, ?)",
      )
      .bind(id, accountId, passwordHash, now, now)
      .run();
    if (result.meta.changes === 1) {
      return { ok: true, device: { accountId, deviceId: id, disabled: false, createdAt: now, updatedAt: now }, password };
    }
  }
  return { ok: false, error: "exists" };
}

/** The device with this id in any account, with its password hash (CONNECT authentication). */
export async function findDevice(db: D1Database, deviceId: string): Promise<DeviceRecord | null> {
  const row = await db.prepare(`SELECT ${COLUMNS} FROM devices WHERE device_id = ?`).bind(deviceId).first<unknown>();
  return row === null ? null : toRecord(row);
}

/** The device with this id in `accountId`; null also when it belongs to another account. */
export async function getDevice(db: D1Database, accountId: string, deviceId: string): Promise<Device | null> {
  const row = await db
    .prepare(`SELECT ${COLUMNS} FROM devices WHERE account_id = ? AND device_id = ?`)
    .bind(accountId, deviceId)
    .first<unknown>();
  return row === null ? null : toDevice(toRecord(row));
}

/** One page of an account's devices ordered by id, starting after the id `after`. */
export async function listDevices(
  db: D1Database,
  accountId: string,
  opts: { limit: number; after?: string },
): Promise<Device[]> {
  const stmt =
    opts.after === undefined
      ? db.prepare(`SELECT ${COLUMNS} FROM devices WHERE account_id = ? ORDER BY device_id LIMIT ?`).bind(accountId, opts.limit)
      : db
          .prepare(`SELECT ${COLUMNS} FROM devices WHERE account_id = ? AND device_id > ? ORDER BY device_id LIMIT ?`)
          .bind(accountId, opts.after, opts.limit);
  const { results } = await stmt.all<unknown>();
  return results.map((row) => toDevice(toRecord(row)));
}

/** Sets the disabled flag; null when the account has no such device. */
export async function setDeviceDisabled(
  db: D1Database,
  accountId: string,
  deviceId: string,
  disabled: boolean,
): Promise<Device | null> {
  const row = await db
    .prepare(`UPDATE devices SET disabled = ?, updated_at = ? WHERE account_id = ? AND device_id = ? RETURNING ${COLUMNS}`)
    .bind(disabled ? 1 : 0, new Date().toISOString(), accountId, deviceId)
    .first<unknown>();
  return row === null ? null : toDevice(toRecord(row));
}

/**
 * Gives the device a fresh password and returns it (the only time it exists in clear); the
 * old one stops authenticating at once. Null when the account has no such device.
 */
export async function rotateDevicePassword(
  db: D1Database,
  pepper: string,
  accountId: string,
  deviceId: string,
): Promise<{ device: Device; password: string } | null> {
  const password = generatePassword();
  const passwordHash = await hashPassword(pepper, password);
  const row = await db
    .prepare(`UPDATE devices SET password_hash = ?, updated_at = ? WHERE account_id = ? AND device_id = ? RETURNING ${COLUMNS}`)
    .bind(passwordHash, new Date().toISOString(), accountId, deviceId)
    .first<unknown>();
  return row === null ? null : { device: toDevice(toRecord(row)), password };
}

/** The accounts that have at least one device, in id order, at most `limit` (GET /admin/v1/metrics). */
export async function listAccounts(db: D1Database, limit: number): Promise<string[]> {
  const { results } = await db.prepare("SELECT DISTINCT account_id FROM devices ORDER BY account_id LIMIT ?").bind(limit).all<unknown>();
  return results.map((row) => {
    if (typeof row !== "object" || row === null) throw new Error("devices: row is not an object");
    return text({ ...row }, "account_id");
  });
}

/** Removes the device; false when the account has no such device. */
export async function deleteDevice(db: D1Database, accountId: string, deviceId: string): Promise<boolean> {
  const result = await db.prepare("DELETE FROM devices WHERE account_id = ? AND device_id = ?").bind(accountId, deviceId).run();
  return result.meta.changes > 0;
}

/**
 * Checks a device's credentials. An unknown device and a wrong password are the same
 * failure to the client (CONNACK 4); `disabled` is reported only after the password
 * matched (CONNACK 5), so it reveals nothing to someone without the password.
 */
export async function authenticateDevice(
  db: D1Database,
  pepper: string,
  deviceId: string,
  password: string,
): Promise<AuthenticateResult> {
  const record = await findDevice(db, deviceId);
  if (record === null) {
    // Spend the same HMAC as for a known device so the response time does not tell whether the id exists.
    await hashPassword(pepper, password);
    return { ok: false, reason: "unknown" };
  }
  if (!(await verifyPassword(pepper, password, record.passwordHash))) return { ok: false, reason: "bad_password" };
  if (record.disabled) return { ok: false, reason: "disabled" };
  return { ok: true, device: toDevice(record) };
}

function toDevice(record: DeviceRecord): Device {
  return {
    accountId: record.accountId,
    deviceId: record.deviceId,
    disabled: record.disabled,
    createdAt: record.createdAt,
    updatedAt: record.updatedAt,
  };
}

function toRecord(row: unknown): DeviceRecord {
  if (typeof row !== "object" || row === null) throw new Error("devices: row is not an object");
  const r: Record<string, unknown> = { ...row };
  return {
    deviceId: text(r, "device_id"),
    accountId: text(r, "account_id"),
    passwordHash: text(r, "password_hash"),
    disabled: integer(r, "disabled") !== 0,
    createdAt: text(r, "created_at"),
    updatedAt: text(r, "updated_at"),
  };
}

function text(row: Record<string, unknown>, column: string): string {
  const v = row[column];
  if (typeof v !== "string") throw new Error(`devices.${column}: expected text`);
  return v;
}

function integer(row: Record<string, unknown>, column: string): number {
  const v = row[column];
  if (typeof v !== "number") throw new Error(`devices.${column}: expected an integer`);
  return v;
}
