import { describe, expect, it } from "vitest";
import { SELF, env } from "cloudflare:test";
import { jwtVerify } from "jose";
import type { Env } from "../../src/env";
import { authenticateDevice } from "../../src/auth/registry";
import { connectDevice, within } from "./mqtt";
import { ADMIN_TOKEN, BASE, admin, expectError, json, newAccount, provision, type Json } from "./admin-client";

const E = env as unknown as Env;

describe("admin API authentication", () => {
  it("answers 401 with WWW-Authenticate without a token, with a wrong one, or with another scheme", async () => {
    const account = newAccount();
    for (const res of [
      await admin("GET", `/accounts/${account}/devices`, undefined, null),
      await admin("GET", `/accounts/${account}/devices`, undefined, "wrong-token"),
      await admin("GET", `/accounts/${account}/devices`, undefined, `${ADMIN_TOKEN}x`),
      await SELF.fetch(`${BASE}/accounts/${account}/devices`, { headers: { Authorization: `Basic ${btoa(`admin:${ADMIN_TOKEN}`)}` } }),
    ]) {
      expect(res.headers.get("WWW-Authenticate")).toBe("Bearer");
      await expectError(res, 401, "unauthorized");
    }
    // Authentication comes before anything else, including body and id validation.
    await expectError(await admin("POST", "/accounts/bad$id/devices", "{", null), 401, "unauthorized");
  });
});

describe("devices", () => {
  it("creates a device with a generated id whose password authenticates, once", async () => {
    const account = newAccount();
    for (const body of [undefined, {}]) {
      const res = await admin("POST", `/accounts/${account}/devices`, body);
      expect(res.status).toBe(201);
      const created = await json(res);
      expect(Object.keys(created).sort()).toEqual(["accountId", "deviceId", "password"]);
      expect(created.accountId).toBe(account);
      expect(created.deviceId).toMatch(/^d-[0-9a-f]{16}$/);
      expect(created.password).toMatch(/^[A-Za-z0-9_-]{32}$/);

      const deviceId = String(created.deviceId);
      const ok = await authenticateDevice(E.DB, E.DEVICE_PEPPER ?? "", deviceId, String(created.password));
      expect(ok).toMatchObject({ ok: true, device: { accountId: account, deviceId, disabled: false } });
      expect(await authenticateDevice(E.DB, E.DEVICE_PEPPER ?? "", deviceId, "wrong")).toEqual({ ok: false, reason: "bad_password" });
      expect(await authenticateDevice(E.DB, E.DEVICE_PEPPER ?? "", `${deviceId}-nope`, String(created.password))).toEqual({ ok: false, reason: "unknown" });

      const shown = await json(await admin("GET", `/accounts/${account}/devices/${deviceId}`));
      expect(shown).not.toHaveProperty("password");
      expect(shown).not.toHaveProperty("passwordHash");
    }
  });

  it("creates a device with a chosen id and refuses bad input", async () => {
    const account = newAccount();
    const deviceId = `dev-${crypto.randomUUID()}`;
    const res = await admin("POST", `/accounts/${account}/devices`, { deviceId });
    expect(res.status).toBe(201);
    expect(await json(res)).toMatchObject({ accountId: account, deviceId });

    await expectError(await admin("POST", `/accounts/${account}/devices`, { deviceId }), 409, "device_exists");
    await expectError(await admin("POST", `/accounts/${account}/devices`, "{not json"), 400, "invalid_json");
    await expectError(await admin("POST", `/accounts/${account}/devices`, { deviceId: "a/b" }), 400, "invalid_device_id");
    await expectError(await admin("POST", `/accounts/${account}/devices`, { deviceId: "" }), 400, "invalid_device_id");
    await expectError(await admin("POST", `/accounts/${account}/devices`, { deviceId: "x".repeat(65) }), 400, "invalid_device_id");
    await expectError(await admin("POST", `/accounts/${account}/devices`, { deviceId: 7 }), 400, "invalid_device_id");
    await expectError(await admin("POST", `/accounts/${account}/devices`, [1]), 400, "invalid_body");
    await expectError(await admin("POST", `/accounts/${account}/devices`, { deviceId: "ok", extra: 1 }), 400, "invalid_body");
    await expectError(await admin("POST", "/accounts/bad+acc/devices", {}), 400, "invalid_account_id");
    await expectError(await admin("POST", `/accounts/${"a".repeat(65)}/devices`, {}), 400, "invalid_account_id");
  });

  it("keeps device ids unique across accounts and accounts apart", async () => {
    const a = newAccount();
    const b = newAccount();
    const { deviceId } = await provision(a, `shared-${crypto.randomUUID()}`);
    await expectError(await admin("POST", `/accounts/${b}/devices`, { deviceId }), 409, "device_exists");

    await expectError(await admin("GET", `/accounts/${b}/devices/${deviceId}`), 404, "device_not_found");
    await expectError(await admin("PATCH", `/accounts/${b}/devices/${deviceId}`, { disabled: true }), 404, "device_not_found");
    await expectError(await admin("DELETE", `/accounts/${b}/devices/${deviceId}`), 404, "device_not_found");
    expect(await json(await admin("GET", `/accounts/${b}/devices`))).toEqual({ devices: [], next: null });

    // Nothing done through account B touched the device.
    expect(await json(await admin("GET", `/accounts/${a}/devices/${deviceId}`))).toMatchObject({ accountId: a, deviceId, disabled: false });
  });

  it("gets a device and answers 404 for unknown ones", async () => {
    const account = newAccount();
    const { deviceId } = await provision(account);
    const res = await admin("GET", `/accounts/${account}/devices/${deviceId}`);
    expect(res.status).toBe(200);
    const body = await json(res);
    expect(Object.keys(body).sort()).toEqual(["accountId", "createdAt", "deviceId", "disabled", "updatedAt"]);
    expect(body).toMatchObject({ accountId: account, deviceId, disabled: false });
    expect(new Date(String(body.createdAt)).toISOString()).toBe(body.createdAt);
    await expectError(await admin("GET", `/accounts/${account}/devices/missing`), 404, "device_not_found");
    await expectError(await admin("GET", "/accounts/bad$acc/devices/x"), 400, "invalid_account_id");
  });

  it("lists an account's devices in id order, page by page", async () => {
    const account = newAccount();
    const ids = ["dev-c", "dev-a", "dev-e", "dev-b", "dev-d"].map((id) => `${id}-${account}`);
    for (const id of ids) await provision(account, id);
    const sorted = [...ids].sort();

    const all = await json(await admin("GET", `/accounts/${account}/devices`));
    expect(all.next).toBeNull();
    expect((all.devices as Json[]).map((d) => d.deviceId)).toEqual(sorted);
    expect((all.devices as Json[])[0]).toMatchObject({ accountId: account, disabled: false });
    expect((all.devices as Json[])[0]).not.toHaveProperty("passwordHash");

    const seen: unknown[] = [];
    let after: string | null = null;
    let pages = 0;
    do {
      const query: string = `?limit=2${after === null ? "" : `&after=${encodeURIComponent(after)}`}`;
      const res = await admin("GET", `/accounts/${account}/devices${query}`);
      expect(res.status).toBe(200);
      const page = await json(res);
      seen.push(...(page.devices as Json[]).map((d) => d.deviceId));
      after = typeof page.next === "string" ? page.next : null;
      pages++;
    } while (after !== null);
    expect(seen).toEqual(sorted);
    expect(pages).toBe(3);

    // A page that ends exactly at the last device says so.
    const exact = await json(await admin("GET", `/accounts/${account}/devices?limit=5`));
    expect(exact.next).toBeNull();
    expect((await json(await admin("GET", `/accounts/${account}/devices?limit=5000`))).devices).toHaveLength(5);

    for (const bad of ["0", "-1", "abc", "1.5"]) {
      await expectError(await admin("GET", `/accounts/${account}/devices?limit=${bad}`), 400, "invalid_limit");
    }
  });

  it("disables and re-enables a device; a disabled device authenticates as disabled", async () => {
    const account = newAccount();
    const { deviceId, password } = await provision(account);
    const res = await admin("PATCH", `/accounts/${account}/devices/${deviceId}`, { disabled: true });
    expect(res.status).toBe(200);
    const body = await json(res);
    expect(body).toMatchObject({ accountId: account, deviceId, disabled: true });
    expect(body).not.toHaveProperty("passwordHash");
    expect(await authenticateDevice(E.DB, E.DEVICE_PEPPER ?? "", deviceId, password)).toEqual({ ok: false, reason: "disabled" });
    // The flag is reported only to someone holding the password.
    expect(await authenticateDevice(E.DB, E.DEVICE_PEPPER ?? "", deviceId, "wrong")).toEqual({ ok: false, reason: "bad_password" });
    expect(await json(await admin("GET", `/accounts/${account}/devices/${deviceId}`))).toMatchObject({ disabled: true });

    expect(await json(await admin("PATCH", `/accounts/${account}/devices/${deviceId}`, { disabled: false }))).toMatchObject({ disabled: false });
    expect(await authenticateDevice(E.DB, E.DEVICE_PEPPER ?? "", deviceId, password)).toMatchObject({ ok: true });

    for (const bad of [{}, { disabled: "yes" }, { disabled: 1 }, { disabled: true, extra: 1 }, [true], null]) {
      await expectError(await admin("PATCH", `/accounts/${account}/devices/${deviceId}`, bad), 400, "invalid_body");
    }
    await expectError(await admin("PATCH", `/accounts/${account}/devices/${deviceId}`, ""), 400, "invalid_body");
    await expectError(await admin("PATCH", `/accounts/${account}/devices/${deviceId}`, "{"), 400, "invalid_json");
    await expectError(await admin("PATCH", `/accounts/${account}/devices/missing`, { disabled: true }), 404, "device_not_found");
  });

  it("deletes a device", async () => {
    const account = newAccount();
    const { deviceId, password } = await provision(account);
    const res = await admin("DELETE", `/accounts/${account}/devices/${deviceId}`);
    expect(res.status).toBe(204);
    expect(await res.text()).toBe("");
    await expectError(await admin("GET", `/accounts/${account}/devices/${deviceId}`), 404, "device_not_found");
    expect(await authenticateDevice(E.DB, E.DEVICE_PEPPER ?? "", deviceId, password)).toEqual({ ok: false, reason: "unknown" });
    await expectError(await admin("DELETE", `/accounts/${account}/devices/${deviceId}`), 404, "device_not_found");
    // The id is free again.
    await provision(newAccount(), deviceId);
  });
});

describe("live connections", () => {
  it("disabling a device closes its connection and refuses the next CONNECT with 5", async () => {
    const account = newAccount();
    const { deviceId, password } = await provision(account);
    const conn = await connectDevice(deviceId, password);
    expect(conn.returnCode).toBe(0);
    expect((await admin("PATCH", `/accounts/${account}/devices/${deviceId}`, { disabled: true })).status).toBe(200);
    expect(await within(conn.closed)).toBe(1008);
    expect((await connectDevice(deviceId, password)).returnCode).toBe(5);
  });

  it("deleting a device closes its connection and refuses the next CONNECT with 4", async () => {
    const account = newAccount();
    const { deviceId, password } = await provision(account);
    const conn = await connectDevice(deviceId, password);
    expect(conn.returnCode).toBe(0);
    expect((await admin("DELETE", `/accounts/${account}/devices/${deviceId}`)).status).toBe(204);
    expect(await within(conn.closed)).toBe(1008);
    expect((await connectDevice(deviceId, password)).returnCode).toBe(4);
  });

  it("kicks a connected client (204) and answers 404 when none is connected", async () => {
    const account = newAccount();
    const { deviceId, password } = await provision(account);
    const conn = await connectDevice(deviceId, password);
    expect(conn.returnCode).toBe(0);
    const res = await admin("DELETE", `/accounts/${account}/clients/${deviceId}?will=false`);
    expect(res.status).toBe(204);
    await within(conn.closed);
    await expectError(await admin("DELETE", `/accounts/${account}/clients/${deviceId}`), 404, "client_not_connected");
    await expectError(await admin("DELETE", `/accounts/${account}/clients/never-connected`), 404, "client_not_connected");
    // The same client id in another account is another session.
    const again = await connectDevice(deviceId, password);
    expect(again.returnCode).toBe(0);
    await expectError(await admin("DELETE", `/accounts/${newAccount()}/clients/${deviceId}`), 404, "client_not_connected");
    expect((await admin("DELETE", `/accounts/${account}/clients/${deviceId}`)).status).toBe(204);
    await within(again.closed);
  });
});

describe("tokens", () => {
  const secret = new TextEncoder().encode("test-jwt-secret-0123456789abcdef0123456789abcdef");

  it("mints an HS256 token with sub, acc, iat, exp and the ACL", async () => {
    const account = newAccount();
    const acl = { pub: ["a/+/b", "c/#"], sub: ["x/#"] };
    const before = Math.floor(Date.now() / 1000);
    const res = await admin("POST", `/accounts/${account}/tokens`, { subject: "user-1", ttlSeconds: 120, acl });
    expect(res.status).toBe(201);
    const body = await json(res);
    expect(Object.keys(body).sort()).toEqual(["expiresAt", "token"]);
    const { payload, protectedHeader } = await jwtVerify(String(body.token), secret, { algorithms: ["HS256"] });
    expect(protectedHeader.alg).toBe("HS256");
    expect(payload).toMatchObject({ sub: "user-1", acc: account, acl });
    expect(payload.iat).toBeGreaterThanOrEqual(before);
    expect(payload.exp).toBe((payload.iat ?? 0) + 120);
    expect(body.expiresAt).toBe(new Date((payload.exp ?? 0) * 1000).toISOString());
  });

  it("defaults the lifetime to an hour and omits acl when not given", async () => {
    const account = newAccount();
    const res = await admin("POST", `/accounts/${account}/tokens`, { subject: "app" });
    expect(res.status).toBe(201);
    const { payload } = await jwtVerify(String((await json(res)).token), secret);
    expect(payload.exp).toBe((payload.iat ?? 0) + 3600);
    expect(payload).not.toHaveProperty("acl");
    expect(Object.keys(payload).sort()).toEqual(["acc", "exp", "iat", "sub"]);
  });

  it("refuses bad token requests", async () => {
    const path = `/accounts/${newAccount()}/tokens`;
    await expectError(await admin("POST", path, "nope"), 400, "invalid_json");
    await expectError(await admin("POST", path, ""), 400, "invalid_body");
    await expectError(await admin("POST", path, [1]), 400, "invalid_body");
    await expectError(await admin("POST", path, { subject: "u", extra: true }), 400, "invalid_body");
    for (const subject of [undefined, "", "a/b", "a+", "#", "x".repeat(129), 5]) {
      await expectError(await admin("POST", path, { subject }), 400, "invalid_subject");
    }
    for (const ttlSeconds of [0, -1, 1.5, 2_592_001, "60", null]) {
      await expectError(await admin("POST", path, { subject: "u", ttlSeconds }), 400, "invalid_ttl");
    }
    expect((await admin("POST", path, { subject: "u", ttlSeconds: 2_592_000 })).status).toBe(201);
    for (const acl of [null, [], "x", { pub: "a" }, { pub: [1] }, { pub: Array.from({ length: 101 }, () => "a") }, { pub: [], sub: [], other: [] }]) {
      await expectError(await admin("POST", path, { subject: "u", acl }), 400, "invalid_acl");
    }
    expect((await admin("POST", path, { subject: "u", acl: { pub: Array.from({ length: 100 }, () => "a"), sub: [] } })).status).toBe(201);
    await expectError(await admin("POST", "/accounts/bad%23acc/tokens", { subject: "u" }), 400, "invalid_account_id");
  });
});
