// The native tools npm test needs: where the console test finds Chromium (test/helpers/chromium.ts),
// on made-up machines, and the message when a bridge-test tool is missing.
import { afterEach, describe, expect, it } from "vitest";
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { chromiumMissing, findChromium, type ChromiumSearch } from "../helpers/chromium";
import { requireTool } from "../helpers/bridge";

let root: string;

function exe(path: string): string {
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, "#!/bin/sh\n");
  chmodSync(path, 0o755);
  return path;
}

function machine(over: Partial<ChromiumSearch> = {}): ChromiumSearch {
  root = mkdtempSync(join(tmpdir(), "chromium-search-"));
  return { env: { PATH: join(root, "bin") }, platform: "linux", home: join(root, "home"), playwrightPath: undefined, installPaths: [join(root, "opt", "chromium")], ...over };
}

afterEach(() => {
  if (root) rmSync(root, { recursive: true, force: true });
});

describe("findChromium", () => {
  it("takes CHROMIUM_PATH first, and reports it alone when it is not there", () => {
    const m = machine();
    const chosen = exe(join(root, "my", "chrome"));
    exe(join(root, "bin", "chromium"));
    expect(findChromium({ ...m, env: { ...m.env, CHROMIUM_PATH: chosen } })).toEqual({ path: chosen });
    expect(findChromium({ ...m, env: { ...m.env, CHROMIUM_PATH: join(root, "nope") } })).toEqual({ tried: [`CHROMIUM_PATH=${join(root, "nope")}`] });
  });

  it("then playwright-core's own revision, then the newest revision in the Playwright cache", () => {
    const m = machine();
    const cache = join(m.home, ".cache", "ms-playwright");
    const old = exe(join(cache, "chromium-1100", "chrome-linux", "chrome"));
    const newer = exe(join(cache, "chromium-1200", "chrome-linux64", "chrome"));
    exe(join(cache, "chromium_headless_shell-1300", "chrome-headless-shell-linux64", "chrome-headless-shell"));
    const own = exe(join(cache, "chromium-1255", "chrome-linux64", "chrome"));
    expect(findChromium({ ...m, playwrightPath: own })).toEqual({ path: own });
    expect(findChromium(m)).toEqual({ path: join(cache, "chromium_headless_shell-1300", "chrome-headless-shell-linux64", "chrome-headless-shell") });
    rmSync(join(cache, "chromium_headless_shell-1300"), { recursive: true });
    rmSync(join(cache, "chromium-1255"), { recursive: true });
    expect(findChromium(m)).toEqual({ path: newer });
    rmSync(join(cache, "chromium-1200"), { recursive: true });
    expect(findChromium(m)).toEqual({ path: old });
  });

  it("honours PLAYWRIGHT_BROWSERS_PATH and the macOS cache folder", () => {
    const m = machine();
    const custom = exe(join(root, "browsers", "chromium-1", "chrome-linux64", "chrome"));
    expect(findChromium({ ...m, env: { ...m.env, PLAYWRIGHT_BROWSERS_PATH: join(root, "browsers") } })).toEqual({ path: custom });
    const mac = exe(join(m.home, "Library", "Caches", "ms-playwright", "chromium-2", "chrome-mac-arm64", "Google Chrome for Testing.app", "Contents", "MacOS", "Google Chrome for Testing"));
    expect(findChromium({ ...m, platform: "darwin" })).toEqual({ path: mac });
  });

  it("then a chromium or google-chrome on PATH, then the usual install paths", () => {
    const m = machine();
    const installed = exe(join(root, "opt", "chromium"));
    expect(findChromium(m)).toEqual({ path: installed });
    const onPath = exe(join(root, "bin", "google-chrome"));
    expect(findChromium(m)).toEqual({ path: onPath });
  });

  it("says where it looked and how to install one when there is none", () => {
    const m = machine();
    const found = findChromium({ ...m, env: { PATH: join(root, "bin"), PLAYWRIGHT_BROWSERS_PATH: join(root, "empty") } });
    expect(found).toEqual({
      tried: [`the Playwright cache ${join(root, "empty")}`, "chromium, chromium-browser, google-chrome, google-chrome-stable, chrome on PATH", join(root, "opt", "chromium")],
    });
    const message = chromiumMissing(["x"]);
    expect(message).toContain("apt-get install chromium");
    expect(message).toContain("npx playwright-core install chromium");
    expect(message).toContain("CHROMIUM_PATH");
  });
});

describe("requireTool", () => {
  it("fails, naming the package per system, when mosquitto_pub or openssl is not on PATH", () => {
    const path = process.env.PATH;
    process.env.PATH = join(tmpdir(), "no-such-folder");
    try {
      expect(() => requireTool("mosquitto_pub", ["--help"])).toThrow(
        "mosquitto_pub is not installed (ENOENT): these tests run it. Debian/Ubuntu: apt-get install mosquitto-clients (.ci/run does); " +
          "Fedora: dnf install mosquitto; Alpine: apk add mosquitto-clients; macOS: brew install mosquitto",
      );
      expect(() => requireTool("openssl", ["version"])).toThrow("Debian/Ubuntu: apt-get install openssl");
    } finally {
      process.env.PATH = path;
    }
  });
});
