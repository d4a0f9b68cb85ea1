import type { TestProject } from "vitest/node";
import { startBroker, stopBroker, type Broker } from "./broker";

declare module "vitest" {
  export interface ProvidedContext {
    brokerUrl: string;
    brokerWsUrl: string;
  }
}

let broker: Broker | undefined;

/** One shared broker (wrangler dev) for the e2e files; tests that restart it start their own. */
export async function setup(project: TestProject): Promise<void> {
  broker = await startBroker({ vars: { KEEPALIVE_MIN_SECONDS: "0", MAX_QUEUED_MESSAGES: "50" } });
  project.provide("brokerUrl", broker.url);
  project.provide("brokerWsUrl", broker.wsUrl);
}

export async function teardown(): Promise<void> {
  if (broker) {
    if (process.env.BROKER_LOG) console.log(broker.output());
    await stopBroker(broker);
  }
}
