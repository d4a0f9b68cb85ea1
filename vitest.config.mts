import { defineConfig } from "vitest/config";
import { cloudflareTest, readD1Migrations } from "@cloudflare/vitest-pool-workers";

const migrations = await readD1Migrations("./migrations");

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
      {
        plugins: [
          cloudflareTest({
            main: "./src/index.ts",
            wrangler: { configPath: "./wrangler.toml" },
            miniflare: {
              bindings: {
                TEST_MIGRATIONS: migrations,
                ADMIN_TOKEN: "test-admin-token",
                JWT_SECRET: "test-jwt-secret-0123456789abcdef0123456789abcdef",
                DEVICE_PEPPER: "test-device-pepper",
                ANONYMOUS_ACCOUNT: "dev",
              },
            },
          }),
        ],
        test: {
          name: "worker",
          include: ["test/worker/**/*.test.ts"],
          setupFiles: ["test/worker/setup.ts"],
          // mqtt-packet's readable-stream dependency fails to load unbundled in the pool.
          deps: { optimizer: { ssr: { enabled: true, include: ["mqtt-packet"] } } },
        },
      },
      {
        test: {
          name: "e2e",
          environment: "node",
          include: ["test/e2e/**/*.test.ts"],
          globalSetup: ["test/helpers/global-setup.ts"],
          testTimeout: 30_000,
          hookTimeout: 60_000,
          // One wrangler dev serves every e2e file; run files one at a time so the
          // single-threaded local runtime is not the flake source.
          fileParallelism: false,
        },
      },
    ],
  },
});
