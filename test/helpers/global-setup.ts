import type { TestProject } from "vitest/node";
import { TEST_VARS, startBroker, stopBroker, type Broker } from "./broker";

declare module "vitest" {
  export interface ProvidedContext {
    brokerUrl: string;
    brokerWsUrl: string;
    adminToken: string;
    jwtSecret: string;
  }
}

let broker: Broker | undefined;


/** One shared broker (wrangler dev) for the e2e files; tests that restart it start their own. */
export async function setup(project: TestProject): Promise<void> {
  // The e2e-shards project runs the protocol suites on a sharded router (vitest.config.mts).
  const sharding = project.config.env ?? {};
  const shardVars: Record<string, string> = sharding.ROUTER_SHARDS ? { ROUTER_SHARDS: String(sharding.ROUTER_SHARDS), ROUTER_SHARD_LEVEL: String(sharding.ROUTER_SHARD_LEVEL ?? "5") } : {};
  broker = await startBroker({ vars: { ...TEST_VARS, ...shardVars } });
  // wrangler dev lists the vars it got (a --var's value as "(hidden)"): make sure the sharded run really is one.
  if (shardVars.ROUTER_SHARDS && !/env\.ROUTER_SHARDS \("\(hidden\)"\)/.test(broker.output())) throw new Error(`the e2e-shards broker did not get ROUTER_SHARDS:\n${broker.output()}`);
  project.provide("adminToken", TEST_VARS.ADMIN_TOKEN);
  project.provide("jwtSecret", TEST_VARS.JWT_SECRET);
  project.provide("brokerUrl", broker.url);
  project.provide("brokerWsUrl", broker.wsUrl);
}

export async function teardown(): Promise<void> {
  if (broker) {
    if (process.env.BROKER_LOG) console.log(broker.output());
    await stopBroker(broker);
  }
}
