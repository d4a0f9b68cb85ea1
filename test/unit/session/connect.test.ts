import { describe, expect, it } from "vitest";
import type { IConnectPacket } from "../../../src/protocol/codec";
import { connackProperties, onConnect, sessionParameters } from "../../../src/session/handlers/connect";
import { dispatch } from "../../../src/session/dispatch";
import { clampKeepAlive } from "../../../src/session/keepalive";
import type { Identity } from "../../../src/auth/identity";
import { FakeLink, connectedAttachment, testConfig } from "./fake-link";

const limits = testConfig({ keepAliveMinSeconds: 10, keepAliveMaxSeconds: 600, sessionExpirySeconds: 3600, maxInflight: 20 }).limits;
const connect = (over: Partial<IConnectPacket> = {}): IConnectPacket => ({
  cmd: "connect", protocolId: "MQTT", protocolVersion: 4, clean: true, keepalive: 60, clientId: "c1", ...over,
});
const user: Identity = { kind: "user", account: "acc", id: "u", acl: { pub: ["#"], sub: ["#"] }, expiresAt: null };

describe("session parameters", () => {
  it("3.1.1: clean session = expiry 0; otherwise the configured maximum", () => {
    expect(sessionParameters(connect(), 4, limits).expirySeconds).toBe(0);
    expect(sessionParameters(connect({ clean: false }), 4, limits).expirySeconds).toBe(3600);
  });
  it("MQTT 5: the requested expiry capped; receive maximum and packet size from the properties", () => {
    const p = sessionParameters(connect({ protocolVersion: 5, properties: { sessionExpiryInterval: 99_999, receiveMaximum: 5, maximumPacketSize: 1000 } }), 5, limits);
    expect(p).toMatchObject({ requestedExpiry: 99_999, expirySeconds: 3600, receiveMax: 5, maxPacketOut: 1000 });
    const props = connackProperties(connect({ protocolVersion: 5, clientId: "" }), "auto-1", p, limits);
    expect(props).toMatchObject({ sessionExpiryInterval: 3600, assignedClientIdentifier: "auto-1", receiveMaximum: 20 });
    expect(props.serverKeepAlive).toBeUndefined();
  });
  it("keep alive is clamped into the configured range; MQTT 5 is told with Server Keep Alive", () => {
    expect(clampKeepAlive(5, limits)).toBe(10);
    expect(clampKeepAlive(0, limits)).toBe(10);
    expect(clampKeepAlive(0, { keepAliveMinSeconds: 0, keepAliveMaxSeconds: 600 })).toBe(0);
    expect(clampKeepAlive(9_999, limits)).toBe(600);
    const p = sessionParameters(connect({ protocolVersion: 5, keepalive: 9_999 }), 5, limits);
    expect(connackProperties(connect({ protocolVersion: 5 }), "c1", p, limits).serverKeepAlive).toBe(600);
  });
});

describe("CONNECT handler", () => {
  it("claims a slot, attaches session then router, sends CONNACK, and resumes queued flows after it", async () => {
    const link = new FakeLink(testConfig(), connectedAttachment(4, { phase: "connecting" }), null);
    const order: string[] = [];
    link.services.authenticate = async () => ({ ok: true, identity: user, clientId: "multi-1", mode: "multi", will: null, willDenied: false });
    link.services.limiter = () => ({ claim: async () => (order.push("claim"), { ok: true }), release: async () => undefined });
    link.services.session = () => ({
      attach: async () => {
        order.push("session");
        // A message handed over while the handshake runs waits for CONNACK.
        link.state.early.push({ topic: "early", payload: new Uint8Array(), qos: 0, retain: false });
        return { ok: true, sessionPresent: true, inboundQos2: [] };
      },
      detach: async () => undefined,
    });
    const attach = link.router.attach.bind(link.router);
    link.router.attach = async (c, conn, opts) => (order.push("router"), attach(c, conn, opts));
    await onConnect(link, connect({ clean: false }));
    expect(order).toEqual(["claim", "session", "router"]);
    expect(link.cmds()).toEqual(["connack", "publish"]);
    expect(link.sent[0]).toEqual({ cmd: "connack", returnCode: 0, sessionPresent: true });
    expect(link.att()).toMatchObject({ phase: "connected", account: "acc", clientId: "multi-1", clean: false });
    expect((await link.readMeta())?.identity).toEqual(user);
  });

  it("a client id owned by another identity answers CONNACK 2, gives the slot back and never attaches the router", async () => {
    const link = new FakeLink(testConfig(), connectedAttachment(4, { phase: "connecting" }), null);
    const released: string[] = [];
    link.services.authenticate = async () => ({ ok: true, identity: user, clientId: "dev-1", mode: "multi", will: null, willDenied: false });
    link.services.limiter = () => ({ claim: async () => ({ ok: true }), release: async (_conn, clientId) => void released.push(clientId) });
    link.services.session = () => ({ attach: async () => ({ ok: false, reason: "not_owner" }), detach: async () => undefined });
    await onConnect(link, connect({ clean: false }));
    expect(link.sent).toEqual([{ cmd: "connack", returnCode: 2, sessionPresent: false }]);
    expect(link.closes).toEqual(["invalidClientId"]);
    expect(released).toEqual(["dev-1"]);
    expect(link.router.attached).toEqual([]);
    expect(await link.readMeta()).toBeNull();
    // The FailedConnect event goes to the account's monitoring topic.
    expect(link.router.published.flat().map((m) => m.topic)).toEqual(["$SYS/mon/dev-1"]);
  });

  it("a client id that connects too often gets 0x9F in MQTT 5 and a close", async () => {
    const link = new FakeLink(testConfig(), connectedAttachment(5, { phase: "connecting" }), null);
    link.services.authenticate = async () => ({ ok: true, identity: user, clientId: "u", mode: "single", will: null, willDenied: false });
    link.services.session = () => ({ attach: async () => ({ ok: false, reason: "rate" }), detach: async () => undefined });
    await onConnect(link, connect({ protocolVersion: 5 }));
    expect(link.sent).toEqual([expect.objectContaining({ cmd: "connack", reasonCode: 0x9f, sessionPresent: false })]);
    expect(link.closes).toEqual(["connectRateExceeded"]);
  });

  it("a full multi-connection quota answers CONNACK 3 and closes without attaching", async () => {
    const link = new FakeLink(testConfig(), connectedAttachment(4, { phase: "connecting" }), null);
    link.services.authenticate = async () => ({ ok: true, identity: user, clientId: "m", mode: "multi", will: null, willDenied: false });
    link.services.limiter = () => ({ claim: async () => ({ ok: false, reason: "full" }), release: async () => undefined });
    await onConnect(link, connect());
    expect(link.sent).toEqual([{ cmd: "connack", returnCode: 3, sessionPresent: false }]);
    expect(link.closes).toEqual(["tooManyConnections"]);
    expect(link.router.attached).toEqual([]);
  });

  it("refused credentials get their CONNACK code and a close", async () => {
    const link = new FakeLink(testConfig(), connectedAttachment(4, { phase: "connecting" }), null);
    await onConnect(link, connect({ username: "x", password: Buffer.from("y") }));
    expect(link.sent).toEqual([{ cmd: "connack", returnCode: 5, sessionPresent: false }]);
    expect(link.closes).toEqual(["notAuthorized"]);
  });
});

describe("dispatch", () => {
  it("the first packet must be CONNECT [MQTT-3.1.0-1]; a second CONNECT is a protocol error [MQTT-3.1.0-2]", async () => {
    const fresh = new FakeLink(testConfig(), connectedAttachment(4, { phase: "connecting" }), null);
    await dispatch(fresh, { cmd: "pingreq" });
    expect(fresh.closes).toEqual(["protocolError"]);
    const connected = new FakeLink();
    await dispatch(connected, connect());
    expect(connected.closes).toEqual(["protocolError"]);
  });
  it("PINGREQ gets PINGRESP; PUBREL gets PUBCOMP even for an unknown id", async () => {
    const link = new FakeLink();
    await dispatch(link, { cmd: "pingreq" });
    await dispatch(link, { cmd: "pubrel", messageId: 77 });
    expect(link.sent).toEqual([{ cmd: "pingresp" }, { cmd: "pubcomp", messageId: 77 }]);
  });
});
