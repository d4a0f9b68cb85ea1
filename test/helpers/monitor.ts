import type { IClientOptions, MqttClient } from "mqtt";
import { inject } from "vitest";
import { mintToken } from "./admin";
import { connectCollecting, subscribe, uid, type Received } from "./mqtt";

/** A `$SYS/mon/<clientId>` event (README "Connection modes and monitoring"). */
export interface MonitorEvent {
  Action: string;
  ClientID: string;
  CloseCode: number;
  Reason: string;
  Protocol: string;
  User: string;
  ClientAddr: string;
  Time: string;
  ConnectTime: string | null;
  ReadBytes?: number;
  ReadMsg?: number;
  WriteBytes?: number;
  WriteMsg?: number;
}

export interface Monitor {
  client: MqttClient;
  got: Received[];
  /** Live (not retained) events received so far, optionally only those of `clientId`. */
  events: (clientId?: string) => MonitorEvent[];
  /** Waits for the first live event of `clientId` with `action`; fails with a message after `ms`. */
  waitEvent: (clientId: string, action: string, ms?: number) => Promise<MonitorEvent>;
}

export interface MonitorOptions {
  /** Base URL of a dedicated broker (default: the shared one). */
  url?: string;
  /** The monitor's own client id and user (default: a unique `mon-…` id). */
  clientId?: string;
  /** Extra MQTT.js options (e.g. `keepalive` under a small keep-alive maximum). */
  mqtt?: IClientOptions;
  /** What to watch (default `$SYS/mon/#`): `$SYS/mon/<clientId>` for one client of a busy account. */
  filter?: string;
}

/** An application of `account` allowed to watch `$SYS/mon/#` (its ACL grants only that). */
export async function monitor(account: string, opts: MonitorOptions = {}): Promise<Monitor> {
  const user = opts.clientId ?? uid("mon");
  const baseUrl = opts.url ?? inject("brokerUrl");
  const wsUrl = `${baseUrl.replace(/^http/, "ws")}/mqtt`;
  const token = await mintToken(account, user, { acl: { pub: [], sub: ["$SYS/mon/#"] }, url: baseUrl });
  const c = await connectCollecting({ clientId: user, username: user, password: token, ...opts.mqtt }, wsUrl);
  await subscribe(c.client, opts.filter ?? "$SYS/mon/#", 0);
  const events = (clientId?: string): MonitorEvent[] =>
    c.got
      .filter((m) => m.topic.startsWith("$SYS/mon/") && !m.retain)
      .map((m) => JSON.parse(m.payload) as MonitorEvent)
      .filter((e) => clientId === undefined || e.ClientID === clientId);
  const waitEvent = async (clientId: string, action: string, ms = 10_000): Promise<MonitorEvent> => {
    const deadline = performance.now() + ms;
    for (;;) {
      const found = events(clientId).find((e) => e.Action === action);
      if (found) return found;
      if (performance.now() > deadline) {
        throw new Error(`timed out waiting for the ${action} event of ${clientId}; its events: ${JSON.stringify(events(clientId))}`);
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  };
  return { ...c, events, waitEvent };
}
