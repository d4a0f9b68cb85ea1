/**
 * Device passwords and identifiers: generation, keyed hashing, constant-time comparison.
 * WebCrypto only.
 *
 * A device password is generated here with 192 bits of entropy, so a fast keyed hash
 * (HMAC-SHA-256 under a server-side pepper) is enough: nobody can brute-force such a
 * password from its hash, with or without the pepper. A slow KDF buys nothing for it and
 * would cost every CONNECT tens of milliseconds (PBKDF2 at workerd's 100,000-iteration cap).
 */

import { base64url } from "../encoding";

const PASSWORD_BYTES = 24;
/** Device and account ids: 1 to 64 characters of A-Z a-z 0-9 _ . - */
export const ID_PATTERN = /^[A-Za-z0-9_.-]{1,64}$/;

const encoder = new TextEncoder();
const hmacKeys = new Map<string, Promise<CryptoKey>>();

/** A fresh device password: 24 random bytes (192 bits), base64url without padding. */
export function generatePassword(): string {
  return base64url(crypto.getRandomValues(new Uint8Array(PASSWORD_BYTES)));
}

/** The stored form of a password: HMAC-SHA-256 keyed by the pepper, lowercase hex. */
export async function hashPassword(pepper: string, password: string): Promise<string> {
  const mac = await crypto.subtle.sign("HMAC", await hmacKey(pepper), encoder.encode(password));
  return hex(new Uint8Array(mac));
}

/** Whether `password` hashes to `storedHash` under `pepper`, compared in constant time. */
export async function verifyPassword(pepper: string, password: string, storedHash: string): Promise<boolean> {
  return timingSafeEqualString(await hashPassword(pepper, password), storedHash);
}

/** Byte equality whose running time depends only on the lengths, not on where the inputs differ. */
export function timingSafeEqual(a: Uint8Array, b: Uint8Array): boolean {
  const n = Math.max(a.length, b.length);
  let diff = a.length ^ b.length;
  for (let i = 0; i < n; i++) diff |= (a[i] ?? 0) ^ (b[i] ?? 0);
  return diff === 0;
}

/** {@link timingSafeEqual} over the UTF-8 bytes of two strings (admin token, stored hashes). */
export function timingSafeEqualString(a: string, b: string): boolean {
  return timingSafeEqual(encoder.encode(a), encoder.encode(b));
}

/** A fresh device id: `d-` and 16 hex characters (64 random bits). */
export function generateDeviceId(): string {
  return `d-${hex(crypto.getRandomValues(new Uint8Array(8)))}`;
}

/**
 * 1..64 characters of `[A-Za-z0-9_.-]`. A device id is an MQTT client id and a topic level,
 * so it must not hold `/`, `+`, `#`, `$` or spaces.
 */
export function isValidDeviceId(id: string): boolean {
  return ID_PATTERN.test(id);
}

/** Account ids follow the device id rule: they also name topic namespaces and object ids. */
export function isValidAccountId(id: string): boolean {
  return ID_PATTERN.test(id);
}

function hmacKey(pepper: string): Promise<CryptoKey> {
  let key = hmacKeys.get(pepper);
  if (!key) {
    key = crypto.subtle.importKey("raw", encoder.encode(pepper), { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
    // A failed import must not poison the cache for later calls.
    key.catch(() => hmacKeys.delete(pepper));
    hmacKeys.set(pepper, key);
  }
  return key;
}

function hex(bytes: Uint8Array): string {
  let out = "";
  for (const b of bytes) out += b.toString(16).padStart(2, "0");
  return out;
}

