import { describe, it, expect } from "vitest";
import { collect, connect, end, pingRoundTrip, sleep, subscribe, uid, waitFor } from "../helpers/mqtt";
import { RawClient } from "../helpers/raw";
import { monitor } from "../helpers/monitor";
import { TEST_VARS } from "../helpers/broker";

async function watcher(topic: string) {
  const c = await connect({ clientId: uid("watch") });
  const got = collect(c);
  await subscribe(c, topic, 1);
  return { c, got };
}

describe("last will", () => {
  const will = (topic: string) => ({ topic, payload: Buffer.from("gone"), qos: 1 as const, retain: false });

  it("is published when the connection drops without DISCONNECT", async () => {
    const topic = `will/${uid()}`;
    const w = await watcher(topic);
    const raw = await RawClient.open();
    await raw.connect(uid(), { will: will(topic) });
    raw.terminate();
    await waitFor(() => w.got.length === 1, "the will");
    expect(w.got[0]).toMatchObject({ topic, payload: "gone" });
    await end(w.c);
  });

  it("is published on a clean WebSocket close without DISCONNECT", async () => {
    const topic = `will/${uid()}`;
    const w = await watcher(topic);
    const raw = await RawClient.open();
    await raw.connect(uid(), { will: will(topic) });
    raw.close();
    await waitFor(() => w.got.length === 1, "the will");
    await end(w.c);
  });

  it("is not published after DISCONNECT", async () => {
    const topic = `will/${uid()}`;
    const w = await watcher(topic);
    const clientId = uid();
    const mon = await monitor(TEST_VARS.ANONYMOUS_ACCOUNT, { filter: `$SYS/mon/${clientId}` });
    const raw = await RawClient.open();
    await raw.connect(clientId, { will: will(topic) });
    raw.send({ cmd: "disconnect" });
    await raw.waitClosed();
    // A will goes out with the connection's Disconnect event (the will first).
    await mon.waitEvent(clientId, "Disconnect");
    await pingRoundTrip(w.c);
    expect(w.got).toEqual([]);
    await end(w.c, mon.client);
  });

  it("is published on a protocol error", async () => {
    const topic = `will/${uid()}`;
    const w = await watcher(topic);
    const raw = await RawClient.open();
    await raw.connect(uid(), { will: will(topic) });
    raw.sendText("not mqtt");
    await raw.waitClosed();
    await waitFor(() => w.got.length === 1, "the will");
    await end(w.c);
  });

  it("is published and the connection closed after 1.5 x keep alive of silence", async () => {
    const topic = `will/${uid()}`;
    const w = await watcher(topic);
    const raw = await RawClient.open();
    const started = Date.now();
    await raw.connect(uid(), { keepalive: 1, will: will(topic) });
    await raw.waitClosed(15_000);
    const elapsed = Date.now() - started;
    await waitFor(() => w.got.length === 1, "the will");
    expect(elapsed).toBeGreaterThanOrEqual(1500);
    await end(w.c);
  });

  it("keeps a connection that pings within its keep alive", async () => {
    const raw = await RawClient.open();
    await raw.connect(uid(), { keepalive: 1 });
    for (let i = 0; i < 6; i++) {
      await sleep(500);
      raw.send({ cmd: "pingreq" });
      await raw.next("pingresp");
    }
    expect(raw.closed).toBeNull();
    raw.close();
  });

  it("is published when the connection is taken over", async () => {
    const topic = `will/${uid()}`;
    const w = await watcher(topic);
    const clientId = uid();
    const a = await RawClient.open();
    await a.connect(clientId, { will: will(topic) });
    const b = await RawClient.open();
    await b.connect(clientId);
    await a.waitClosed();
    await waitFor(() => w.got.length === 1, "the will of the old connection");
    b.close();
    await end(w.c);
  });
});
