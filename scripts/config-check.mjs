#!/usr/bin/env node
// Checks the vars a local or deployed broker would run with against the schema in
// src/config.ts (the same parser the Worker uses), before anything starts:
//   node scripts/config-check.mjs [--no-dev-vars] [--var NAME:VALUE]...
// reads wrangler.toml's [vars] (with wrangler's own reader), then .dev.vars (as wrangler dev
// does; skipped with --no-dev-vars, as `npm run deploy` does), then the --var overrides.
// Exits 0 when they parse, 2 with one line per bad var otherwise. `npm start` runs the same
// check (checkConfig below) and refuses to start on a bad var.
import { existsSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { interfaceMembers } from "./env-types.mjs";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");

/** Reads KEY=value lines (ignores blanks and # comments; one pair of surrounding quotes is removed). */
export function parseDevVars(text) {
  const vars = {};
  for (const line of text.split(/\r?\n/)) {
    const m = /^\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$/.exec(line);
    if (m && !line.trimStart().startsWith("#")) vars[m[1]] = m[2].replace(/^"(.*)"$/, "$1");
  }
  return vars;
}

/** `--var NAME:VALUE` pairs (wrangler dev's syntax) from argv; the rest is returned apart. */
export function parseVarArgs(argv) {
  const vars = {};
  const rest = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const value = arg === "--var" ? argv[++i] : arg.startsWith("--var=") ? arg.slice("--var=".length) : undefined;
    if (value === undefined) {
      rest.push(arg);
      continue;
    }
    const colon = value.indexOf(":");
    if (colon <= 0) throw new Error(`--var expects NAME:VALUE, got ${JSON.stringify(value)}`);
    vars[value.slice(0, colon)] = value.slice(colon + 1);
  }
  return { vars, rest };
}

/**
 * src/config.ts, bundled in memory with esbuild (wrangler's own copy, so nothing extra is
 * installed) and imported: the schema and the parser the Worker runs.
 */
export async function loadConfigModule(root = ROOT) {
  const fromWrangler = createRequire(join(root, "node_modules/wrangler/package.json"));
  const esbuild = await import(pathToFileURL(fromWrangler.resolve("esbuild")).href);
  let out;
  try {
    out = await esbuild.build({
      entryPoints: [join(root, "src/config.ts")],
      bundle: true,
      write: false,
      format: "esm",
      platform: "neutral",
      logLevel: "silent",
    });
  } finally {
    // esbuild keeps a service process for later builds; npm start would carry it along.
    await esbuild.stop?.();
  }
  const code = out.outputFiles[0].text;
  return import(`data:text/javascript;base64,${Buffer.from(code).toString("base64")}`);
}

/** wrangler.toml's [vars], as wrangler reads them (values may be JSON values, not only strings). */
export async function readTomlVars(root = ROOT) {
  const { unstable_readConfig } = await import(pathToFileURL(createRequire(join(root, "package.json")).resolve("wrangler")).href);
  const config = unstable_readConfig({ config: join(root, "wrangler.toml") });
  const vars = config && typeof config === "object" && config.vars && typeof config.vars === "object" ? config.vars : {};
  return { ...vars };
}

/**
 * The vars from wrangler.toml, then .dev.vars, then `overrides`, checked with src/config.ts.
 * Returns { ok, problems: string[] (one per bad var, with where it was set), warnings: string[] }.
 * A name the schema does not know is a warning (a typo would otherwise be ignored), unless it
 * is a secret of src/env.ts's Env.
 */
export async function checkConfig({ root = ROOT, devVars = true, overrides = {} } = {}) {
  const [mod, toml] = await Promise.all([loadConfigModule(root), readTomlVars(root)]);
  const vars = {};
  const source = {};
  const put = (values, where) => {
    for (const [name, value] of Object.entries(values)) {
      vars[name] = value;
      source[name] = where;
    }
  };
  put(toml, "wrangler.toml [vars]");
  const devVarsPath = join(root, ".dev.vars");
  if (devVars && existsSync(devVarsPath)) put(parseDevVars(readFileSync(devVarsPath, "utf8")), ".dev.vars");
  put(overrides, "--var");

  const env = interfaceMembers(readFileSync(join(root, "src/env.ts"), "utf8"), "Env");
  const secrets = [...env].filter(([n, m]) => m.optional && !(n in mod.CONFIG_SCHEMA)).map(([n]) => n);
  const warnings = Object.keys(vars)
    .filter((name) => !(name in mod.CONFIG_SCHEMA) && !secrets.includes(name))
    .map((name) => `${name} (${source[name]}) is not a var the broker reads; ignored`);
  const parsed = mod.parseConfig(vars);
  const problems = parsed.ok ? [] : parsed.error.issues.map((i) => `${i.message} (${source[i.name] ?? "unset"})`);
  return { ok: parsed.ok, problems, warnings };
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  let args;
  try {
    args = parseVarArgs(process.argv.slice(2));
  } catch (err) {
    console.error(`config-check: ${err.message}`);
    process.exit(2);
  }
  const unknown = args.rest.filter((a) => a !== "--no-dev-vars");
  if (unknown.length > 0) {
    console.error(`config-check: unknown argument ${unknown[0]}\nusage: node scripts/config-check.mjs [--no-dev-vars] [--var NAME:VALUE]...`);
    process.exit(2);
  }
  const result = await checkConfig({ devVars: !args.rest.includes("--no-dev-vars"), overrides: args.vars });
  for (const w of result.warnings) console.warn(`config-check: warning: ${w}`);
  if (!result.ok) {
    console.error("config-check: the config is invalid:");
    for (const p of result.problems) console.error(`  ${p}`);
    process.exit(2);
  }
  console.log("config-check: the vars parse");
}
