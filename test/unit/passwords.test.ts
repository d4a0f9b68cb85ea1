import { describe, expect, it } from "vitest";
import {
  generateDeviceId,
  generatePassword,
  hashPassword,
  isValidAccountId,
  isValidDeviceId,
  timingSafeEqual,
  timingSafeEqualString,
  verifyPassword,
} from "../../src/auth/passwords";

const bytes = (...xs: number[]): Uint8Array => new Uint8Array(xs);

describe("device passwords", () => {
  it("verifies the password it hashed and nothing else", async () => {
    const password = generatePassword();
    const hash = await hashPassword("pepper", password);
    expect(hash).toMatch(/^[0-9a-f]{64}$/);
    expect(await hashPassword("pepper", password)).toBe(hash);
    expect(await verifyPassword("pepper", password, hash)).toBe(true);
    expect(await verifyPassword("pepper", `${password}x`, hash)).toBe(false);
    expect(await verifyPassword("pepper", "", hash)).toBe(false);
    expect(await verifyPassword("pepper", password, hash.slice(1))).toBe(false);
  });

  it("depends on the pepper", async () => {
    const password = generatePassword();
    const a = await hashPassword("pepper-a", password);
    const b = await hashPassword("pepper-b", password);
    expect(a).not.toBe(b);
    expect(await verifyPassword("pepper-b", password, a)).toBe(false);
  });

  it("generates 24 random bytes as base64url, never the same twice", () => {
    const seen = new Set<string>();
    for (let i = 0; i < 1000; i++) {
      const p = generatePassword();
      expect(p).toMatch(/^[A-Za-z0-9_-]{32}$/);
      expect(Buffer.from(p, "base64url")).toHaveLength(24);
      seen.add(p);
    }
    expect(seen.size).toBe(1000);
  });
});

describe("timingSafeEqual", () => {
  it.each([
    [bytes(), bytes(), true],
    [bytes(1, 2, 3), bytes(1, 2, 3), true],
    [bytes(1, 2, 3), bytes(1, 2, 4), false],
    [bytes(0, 2, 3), bytes(1, 2, 3), false],
    [bytes(1, 2, 3), bytes(1, 2), false],
    [bytes(1, 2), bytes(1, 2, 3), false],
    [bytes(), bytes(0), false],
    [bytes(0), bytes(), false],
  ])("%o vs %o → %s", (a, b, equal) => {
    expect(timingSafeEqual(a, b)).toBe(equal);
  });

  it("compares strings by their UTF-8 bytes", () => {
    expect(timingSafeEqualString("token", "token")).toBe(true);
    expect(timingSafeEqualString("token", "tokeN")).toBe(false);
    expect(timingSafeEqualString("token", "token ")).toBe(false);
    expect(timingSafeEqualString("", "")).toBe(true);
    expect(timingSafeEqualString("é", "e\u0301")).toBe(false);
  });
});

describe("device and account ids", () => {
  it("generates valid, distinct device ids", () => {
    const a = generateDeviceId();
    expect(a).toMatch(/^d-[0-9a-f]{16}$/);
    expect(isValidDeviceId(a)).toBe(true);
    expect(generateDeviceId()).not.toBe(a);
  });

  it.each([
    ["sensor-1", true],
    ["A.b_c-9", true],
    ["x", true],
    ["a".repeat(64), true],
    ["a".repeat(65), false],
    ["", false],
    ["a/b", false],
    ["a+b", false],
    ["a#", false],
    ["$SYS", false],
    ["has space", false],
    ["tab\t", false],
    ["nul\u0000", false],
    ["ünï", false],
    ["line\n", false],
  ])("%j → %s", (id, valid) => {
    expect(isValidDeviceId(id)).toBe(valid);
    expect(isValidAccountId(id)).toBe(valid);
  });
});
