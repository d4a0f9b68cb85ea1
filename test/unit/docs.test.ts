import { describe, expect, it } from "vitest";
import { existsSync, readFileSync, readdirSync } from "node:fs";
import { dirname, join, resolve } from "node:path";

const ROOT = resolve(import.meta.dirname, "../..");
const PAGES = ["README.md", ...readdirSync(join(ROOT, "docs")).filter((f) => f.endsWith(".md")).map((f) => `docs/${f}`)];

/** GitHub's heading anchors: lower case, punctuation dropped, spaces to dashes. */
function anchors(markdown: string): Set<string> {
  const out = new Set<string>();
  let fenced = false;
  for (const line of markdown.split("\n")) {
    if (line.startsWith("```")) fenced = !fenced;
    const m = fenced ? null : /^#{1,6} (.+)$/.exec(line);
    if (m?.[1]) out.add(m[1].trim().toLowerCase().replace(/[^\w\- ]/g, "").replace(/ /g, "-"));
  }
  return out;
}

/** Markdown links outside code: `[text](target)`. */
function links(markdown: string): string[] {
  const withoutCode = markdown.replace(/```[\s\S]*?```/g, "").replace(/`[^`\n]*`/g, "");
  return [...withoutCode.matchAll(/\]\(([^)\s]+)\)/g)].flatMap((m) => (m[1] ? [m[1]] : []));
}

describe("the documentation", () => {
  it("has the pages the README links to, each a page of its own", () => {
    expect(PAGES).toEqual(expect.arrayContaining(["docs/connecting.md", "docs/bridge.md", "docs/configuration.md", "docs/security.md", "docs/operations.md", "docs/api.md", "docs/protocol.md", "docs/architecture.md", "docs/comparison.md", "docs/troubleshooting.md"]));
  });

  it("keeps the README to about 200 lines, with the newcomer's two commands", () => {
    const readme = readFileSync(join(ROOT, "README.md"), "utf8");
    expect(readme.split("\n").length).toBeLessThanOrEqual(210);
    expect(readme).toContain("npm install && npm start");
    expect(readme).toContain("npm ci && npm test");
  });

  it("every relative link resolves to a file, and every #anchor to a heading", () => {
    const broken: string[] = [];
    for (const page of PAGES) {
      const text = readFileSync(join(ROOT, page), "utf8");
      for (const link of links(text)) {
        if (/^[a-z]+:/i.test(link)) continue; // https:, mailto:
        const [path = "", anchor] = link.split("#");
        const target = path === "" ? join(ROOT, page) : resolve(dirname(join(ROOT, page)), path);
        if (!existsSync(target)) {
          broken.push(`${page}: ${link} (no such file)`);
          continue;
        }
        if (anchor && target.endsWith(".md") && !anchors(readFileSync(target, "utf8")).has(anchor)) broken.push(`${page}: ${link} (no such heading)`);
      }
    }
    expect(broken).toEqual([]);
  });
});
