/**
 * Typed stubs of the five Durable Object classes, by the names that address them. Input
 * names (account ids, client ids) are only ever passed to `idFromName`, never used as keys.
 */
import type { Env } from "./env";
import type { MqttConnection } from "./session/connection";
import type { MqttSession } from "./session/session-store";
import type { TopicRouter } from "./router/router";
import type { ConnectionLimiter } from "./limits/connection-limiter";
import type { KeepAliveClock } from "./session/clock";
import { meterStub } from "./metrics";

/** The connection object that terminates one WebSocket, by its hex id. */
export function connectionStub(env: Env, connId: string): DurableObjectStub<MqttConnection> {
  return meterStub(env, env.CONNECTION.get(env.CONNECTION.idFromString(connId)), "connection");
}

/** The owner of the persistent state of one MQTT session (account + client id). */
export function sessionStub(env: Env, account: string, clientId: string): DurableObjectStub<MqttSession> {
  return meterStub(env, env.SESSION.get(env.SESSION.idFromName(sessionName(account, clientId))), "session");
}

/** The topic router of one account. */
export function routerStub(env: Env, account: string): DurableObjectStub<TopicRouter> {
  return meterStub(env, env.ROUTER.get(env.ROUTER.idFromName(account)), "router");
}

/** The connection-limit object of one identity (account + device id or JWT subject). */
export function limiterStub(env: Env, account: string, identity: string): DurableObjectStub<ConnectionLimiter> {
  return meterStub(env, env.LIMITER.get(env.LIMITER.idFromName(sessionName(account, identity))), "limiter");
}

/** The keep-alive clock of one account (KEEPALIVE_CLOCK = "shared"); the NUL keeps it apart from every identity's name. */
export function clockStub(env: Env, account: string): DurableObjectStub<KeepAliveClock> {
  return meterStub(env, env.CLOCK.get(env.CLOCK.idFromName(`${account}\u0000clock`)), "clock");
}

/** The connection-limit object GET /health asks; its name has no NUL, so no identity's object is it. */
export function healthStub(env: Env): DurableObjectStub<ConnectionLimiter> {
  return meterStub(env, env.LIMITER.get(env.LIMITER.idFromName("health")), "limiter");
}

/** Client ids are free text; the NUL separator cannot occur in a valid MQTT string [MQTT-1.5.3-2]. */
export function sessionName(account: string, clientId: string): string {
  return `${account}\u0000${clientId}`;
}
