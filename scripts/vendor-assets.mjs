#!/usr/bin/env node
// Copies MQTT.js's browser build into the console's static assets (public/vendor/, git-ignored).
// wrangler runs this as the `[build] command` of wrangler.toml before every `wrangler dev`,
// `wrangler deploy` and `wrangler deploy --dry-run`, so the file always matches the installed
// `mqtt` package and nobody runs a build step by hand.
import { copyFileSync, existsSync, mkdirSync, readFileSync, renameSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");
/** MQTT.js as Node finds it (also when this package is installed in an application, beside it). */
function mqttBrowserBuild() {
  try {
    return join(dirname(createRequire(import.meta.url).resolve("mqtt/package.json")), "dist/mqtt.min.js");
  } catch {
    return join(ROOT, "node_modules/mqtt/dist/mqtt.min.js");
  }
}
const SOURCE = mqttBrowserBuild();
const TARGET = join(ROOT, "public/vendor/mqtt.min.js");

if (!existsSync(SOURCE)) {
  console.error("vendor-assets: node_modules/mqtt/dist/mqtt.min.js not found; run `npm ci` first");
  process.exit(1);
}
const wanted = readFileSync(SOURCE);
if (!existsSync(TARGET) || !readFileSync(TARGET).equals(wanted)) {
  mkdirSync(dirname(TARGET), { recursive: true });
  // Copy then rename: several wrangler processes (the e2e tests start more than one) may run
  // this at once, and none of them may serve a half-written file.
  const tmp = `${TARGET}.${process.pid}.tmp`;
  copyFileSync(SOURCE, tmp);
  renameSync(tmp, TARGET);
}
