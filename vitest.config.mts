import { defineConfig } from "vitest/config";
import { cloudflareTest, readD1Migrations } from "@cloudflare/vitest-pool-workers";

const migrations = await readD1Migrations("./migrations");

/** The end-to-end files written against MQTT.js that run once per protocol version. */
const PROTOCOL_SUITES = [
  "test/e2e/pubsub.test.ts",
  "test/e2e/retained.test.ts",
  "test/e2e/session.test.ts",
  "test/e2e/will.test.ts",
  "test/e2e/qos2.test.ts",
  "test/e2e/shared.test.ts",
  "test/e2e/identity.test.ts",
];

/** What the four end-to-end projects share: real MQTT clients against `wrangler dev` (one per project). */
const E2E = {
  environment: "node" as const,
  globalSetup: ["test/helpers/global-setup.ts"],
  testTimeout: 30_000,
  hookTimeout: 60_000,
  // Real sockets against a real runtime, on machines that may be loaded: a failed test runs once more.
  // A test that passes only on its second run is still reported, by name and first error, in
  // `npm test`'s summary ("passed on retry"), so a flake stays visible.
  retry: 1,
  // One wrangler dev serves every file of a project; run files one at a time so the
  // single-threaded local runtime is not the flake source.
  fileParallelism: false,
};

/**
 * The Worker in workerd through @cloudflare/vitest-pool-workers, with the test bindings; `vars`
 * on top (the `worker-alarm` project's KEEPALIVE_CLOCK).
 */
function workerPool(vars: Record<string, string> = {}) {
  return cloudflareTest({
    main: "./src/index.ts",
    wrangler: { configPath: "./wrangler.toml" },
    miniflare: {
      bindings: {
        TEST_MIGRATIONS: migrations,
        ADMIN_TOKEN: "test-admin-token",
        JWT_SECRET: "test-jwt-secret-0123456789abcdef0123456789abcdef",
        DEVICE_PEPPER: "test-device-pepper",
        ANONYMOUS_ACCOUNT: "dev",
        // Small, so the eviction of retained monitoring events shows with a handful.
        MAX_MONITOR_RETAINED: "3",
        // Small limits for test/worker/hostile.test.ts: each is reached in a few requests.
        HTTP_PUBLISH_RATE_PER_SECOND: "1",
        HTTP_PUBLISH_BURST: "3",
        MAX_MULTI_CONNECTIONS: "3",
        // The retained quota of test/worker/router.test.ts.
        MAX_RETAINED_MESSAGES: "20",
        MAX_RETAINED_BYTES: "2000000",
        // Short, so test/worker/connection.test.ts sees a clean session's held messages written.
        OUTBOX_HOLD_MS: "1000",
        ...vars,
      },
      // The optional Analytics Engine binding, so the router's data points run in the tests
      // (Miniflare's local dataset accepts them and keeps nothing).
      analyticsEngineDatasets: { ANALYTICS: { dataset: "mqtt_broker" } },
    },
  });
}

/** What the worker projects share besides the pool. */
const WORKER = {
  setupFiles: ["test/worker/setup.ts"],
  // mqtt-packet's readable-stream dependency fails to load unbundled in the pool.
  deps: { optimizer: { ssr: { enabled: true, include: ["mqtt-packet"] } } },
};

export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: "unit",
          environment: "node",
          include: ["test/unit/**/*.test.ts"],
        },
      },
      // edge-mqtt-broker/local: brokers started in the test process with Miniflare (no wrangler dev).
      {
        test: {
          name: "local",
          environment: "node",
          include: ["test/local/**/*.test.ts"],
          // The first start after a source change bundles the Worker (wrangler deploy --dry-run).
          testTimeout: 60_000,
          hookTimeout: 60_000,
        },
      },
      {
        plugins: [workerPool()],
        test: {
          ...WORKER,
          name: "worker",
          include: ["test/worker/**/*.test.ts"],
          exclude: ["test/worker/alarm/**"],
        },
      },
      // The connection's own keep-alive alarm (the default is the account's shared clock).
      {
        plugins: [workerPool({ KEEPALIVE_CLOCK: "alarm" })],
        test: {
          ...WORKER,
          name: "worker-alarm",
          include: ["test/worker/alarm/**/*.test.ts"],
        },
      },
      {
        test: {
          ...E2E,
          name: "e2e",
          include: ["test/e2e/**/*.test.ts"],
        },
      },
      // The protocol suites again with MQTT.js speaking MQTT 5 (test/helpers/mqtt.ts reads MQTT_VERSION).
      {
        test: {
          ...E2E,
          name: "e2e-v5",
          include: PROTOCOL_SUITES,
          env: { MQTT_VERSION: "5" },
        },
      },
      // The protocol suites again on a broker whose accounts route over 4 router shards, keyed on
      // topic level 1 (the tests' topics vary there), so filters and topics spread over shards.
      {
        test: {
          ...E2E,
          name: "e2e-shards",
          include: [...PROTOCOL_SUITES, "test/e2e/mqtt5.test.ts", "test/e2e/admin-views.test.ts"],
          env: { ROUTER_SHARDS: "4", ROUTER_SHARD_LEVEL: "1" },
        },
      },
      // The protocol suites again with MQTT.js speaking MQTT 3 (test/helpers/mqtt.ts reads MQTT_VERSION).
      {
        test: {
          ...E2E,
          name: "e2e-v3",
          include: PROTOCOL_SUITES,
          env: { MQTT_VERSION: "3" },
        },
      },
    ],
  },
});
