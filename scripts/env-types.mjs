#!/usr/bin/env node
// `npm run check:types`: proves that the hand-written `Env` in src/env.ts cannot drift from
// wrangler.toml. `wrangler types` (offline) generates the bindings wrangler.toml declares into a
// temporary file; every generated binding must be in src/env.ts with the same kind (the same
// Durable Object class, D1Database, Fetcher, string), and every binding src/env.ts declares as
// required must be generated. Optional members of src/env.ts are secrets (`wrangler secret put`,
// `.dev.vars`), which wrangler.toml does not list. src/env.ts stays hand-written because its
// Durable Object namespaces are typed with the classes, so RPC stubs are typed.
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");

/**
 * The members of `interface <name> { ... }` in `text`: name -> { type, optional }.
 * @param {string} text
 * @param {string} name
 * @returns {Map<string, { type: string, optional: boolean }>}
 */
export function interfaceMembers(text, name) {
  const start = new RegExp(`interface\\s+${name}\\s*\\{`).exec(text);
  if (!start) throw new Error(`no interface ${name}`);
  let depth = 1;
  let i = start.index + start[0].length;
  const bodyStart = i;
  for (; i < text.length && depth > 0; i++) {
    if (text[i] === "{") depth++;
    else if (text[i] === "}") depth--;
  }
  const body = text
    .slice(bodyStart, i - 1)
    .replace(/\/\*[\s\S]*?\*\//g, "")
    .replace(/\/\/.*$/gm, "");
  const members = new Map();
  for (const m of body.matchAll(/(?:^|[;\s])([A-Za-z_$][\w$]*)\s*(\?)?\s*:\s*([^;]+);/g)) {
    members.set(m[1], { type: (m[3] ?? "").trim(), optional: m[2] === "?" });
  }
  return members;
}

/**
 * A comparable kind: `DurableObjectNamespace<Class>`, `D1Database`, `string`, …
 * @param {string} type
 * @returns {string}
 */
export function bindingKind(type) {
  const dobj = /^DurableObjectNamespace<\s*(?:import\([^)]*\)\.)?([\w$]+)\s*>$/.exec(type);
  if (dobj) return `DurableObjectNamespace<${dobj[1]}>`;
  // `wrangler types --strict-vars=false` writes vars as `string`; literal unions count as string.
  if (/^(string|"[^"]*"(\s*\|\s*"[^"]*")*)$/.test(type)) return "string";
  return type;
}

/**
 * Differences between the generated Env and src/env.ts's Env, as human-readable lines.
 * @param {Map<string, { type: string, optional: boolean }>} generated
 * @param {Map<string, { type: string, optional: boolean }>} handWritten
 * @returns {string[]}
 */
export function compareEnv(generated, handWritten) {
  const problems = [];
  for (const [name, gen] of generated) {
    const own = handWritten.get(name);
    if (!own) {
      problems.push(`${name}: in wrangler.toml (${gen.type}) but not in src/env.ts's Env`);
      continue;
    }
    if (bindingKind(gen.type) !== bindingKind(own.type)) {
      problems.push(`${name}: wrangler.toml gives ${bindingKind(gen.type)}, src/env.ts says ${own.type}`);
    }
  }
  for (const [name, own] of handWritten) {
    if (!own.optional && !generated.has(name)) {
      problems.push(`${name}: required in src/env.ts but wrangler.toml does not bind it (make it optional if it is a secret)`);
    }
  }
  return problems;
}

/**
 * Runs `wrangler types` into a temp dir (without .dev.vars, so local secrets do not count)
 * and compares. Returns { ok, problems, names }.
 */
export function checkEnvTypes(env = process.env) {
  const tmp = mkdtempSync(join(tmpdir(), "mqtt-env-types-"));
  try {
    const out = join(tmp, "worker-configuration.d.ts");
    const emptyEnv = join(tmp, "empty.env");
    writeFileSync(emptyEnv, "");
    const r = spawnSync(
      join(ROOT, "node_modules/.bin/wrangler"),
      ["types", out, "--include-runtime=false", "--strict-vars=false", "--env-file", emptyEnv],
      { cwd: ROOT, env, encoding: "utf8" },
    );
    if (r.status !== 0) {
      return { ok: false, problems: [`wrangler types exited ${r.status ?? r.signal}: ${r.stderr || r.stdout}`], names: [] };
    }
    const generatedText = readFileSync(out, "utf8");
    const cloudflare = generatedText.slice(generatedText.indexOf("declare namespace Cloudflare"));
    const generated = interfaceMembers(cloudflare, "Env");
    const handWritten = interfaceMembers(readFileSync(join(ROOT, "src/env.ts"), "utf8"), "Env");
    const problems = compareEnv(generated, handWritten);
    return { ok: problems.length === 0, problems, names: [...generated.keys()] };
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const result = checkEnvTypes({
    ...process.env,
    CLOUDFLARE_CF_FETCH_ENABLED: "false",
    WRANGLER_SEND_METRICS: "false",
    XDG_CONFIG_HOME: join(ROOT, ".wrangler/config"),
  });
  if (result.ok) {
    console.log(`env types: src/env.ts matches wrangler.toml (${result.names.length} bindings: ${result.names.join(", ")})`);
  } else {
    console.error(`env types: src/env.ts and wrangler.toml differ:\n  ${result.problems.join("\n  ")}`);
    process.exitCode = 1;
  }
}
