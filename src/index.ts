/**
 * Worker entry: the Hono app handles HTTP; the Durable Object classes are exported for
 * their bindings in wrangler.toml.
 */
import { app } from "./http/app";

export { MqttConnection } from "./session/connection";
export { MqttSession } from "./session/session-store";
export { TopicRouter } from "./router/router";
export { ConnectionLimiter } from "./limits/connection-limiter";
export { KeepAliveClock } from "./session/clock";

export default app;
