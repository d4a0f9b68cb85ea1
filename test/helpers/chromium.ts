import { accessSync, constants, readdirSync } from "node:fs";
import { homedir } from "node:os";
import { delimiter, join } from "node:path";

/** Where to look, so tests can point it at a made-up machine. */
export interface ChromiumSearch {
  env: NodeJS.ProcessEnv;
  platform: NodeJS.Platform;
  home: string;
  /** The path playwright-core expects for its own Chromium revision (`chromium.executablePath()`). */
  playwrightPath: string | undefined;
  /** Absolute install paths to try last (INSTALL_PATHS on a real machine). */
  installPaths: readonly string[];
}

/** Executables inside a Playwright cache folder `chromium-<rev>` or `chromium_headless_shell-<rev>`, old and new layouts. */
const CACHE_LAYOUTS = [
  ["chrome-linux64", "chrome"],
  ["chrome-linux-arm64", "chrome"],
  ["chrome-linux", "chrome"],
  ["chrome-headless-shell-linux64", "chrome-headless-shell"],
  ["chrome-headless-shell-linux-arm64", "chrome-headless-shell"],
  ["chrome-linux", "headless_shell"],
  ["chrome-mac-arm64", "Google Chrome for Testing.app", "Contents", "MacOS", "Google Chrome for Testing"],
  ["chrome-mac-x64", "Google Chrome for Testing.app", "Contents", "MacOS", "Google Chrome for Testing"],
  ["chrome-mac", "Chromium.app", "Contents", "MacOS", "Chromium"],
  ["chrome-headless-shell-mac-arm64", "chrome-headless-shell"],
  ["chrome-headless-shell-mac-x64", "chrome-headless-shell"],
  ["chrome-win64", "chrome.exe"],
  ["chrome-win", "chrome.exe"],
];

/** Names of a system Chromium or Chrome on PATH, then absolute install paths. */
const PATH_NAMES = ["chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome"];
export const INSTALL_PATHS: readonly string[] = [
  "/usr/bin/chromium",
  "/usr/bin/chromium-browser",
  "/usr/lib/chromium/chromium",
  "/snap/bin/chromium",
  "/usr/bin/google-chrome",
  "/usr/bin/google-chrome-stable",
  "/opt/google/chrome/chrome",
  "/Applications/Chromium.app/Contents/MacOS/Chromium",
  "/Applications/Google Chrome.app/Contents/MacOS/Google Chrome",
  "C:\\Program Files\\Google\\Chrome\\Application\\chrome.exe",
];

function executable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** Playwright's browser cache: PLAYWRIGHT_BROWSERS_PATH, else its per-platform default. */
function playwrightCache(s: ChromiumSearch): string {
  const set = s.env.PLAYWRIGHT_BROWSERS_PATH;
  if (set && set !== "0") return set;
  if (s.platform === "darwin") return join(s.home, "Library", "Caches", "ms-playwright");
  if (s.platform === "win32") return join(s.env.LOCALAPPDATA ?? join(s.home, "AppData", "Local"), "ms-playwright");
  return join(s.env.XDG_CACHE_HOME ?? join(s.home, ".cache"), "ms-playwright");
}

/** Every Chromium in the cache, the newest revision first (full Chromium before the headless shell). */
function cachedChromiums(cache: string): string[] {
  let entries: string[];
  try {
    entries = readdirSync(cache);
  } catch {
    return [];
  }
  const revision = (name: string): number => Number(/-(\d+)$/.exec(name)?.[1] ?? 0);
  const dirs = entries.filter((e) => /^chromium(_headless_shell)?-\d+$/.test(e));
  dirs.sort((a, b) => revision(b) - revision(a) || Number(a.includes("headless")) - Number(b.includes("headless")));
  return dirs.flatMap((d) => CACHE_LAYOUTS.map((parts) => join(cache, d, ...parts)));
}

/**
 * The Chromium the console test drives, in this order: `CHROMIUM_PATH`; playwright-core's own
 * revision in the Playwright cache (`npx playwright-core install chromium`); any other
 * revision there; a system Chromium or Chrome on PATH or at its usual install path.
 * Returns the path, or the list of places looked at for the error message.
 */
export function findChromium(s: ChromiumSearch): { path: string } | { tried: string[] } {
  const tried: string[] = [];
  const candidates: string[] = [];
  const fromEnv = s.env.CHROMIUM_PATH;
  if (fromEnv) {
    // An explicit choice that is not there is an error, not a reason to pick another browser.
    return executable(fromEnv) ? { path: fromEnv } : { tried: [`CHROMIUM_PATH=${fromEnv}`] };
  }
  if (s.playwrightPath) candidates.push(s.playwrightPath);
  const cache = playwrightCache(s);
  candidates.push(...cachedChromiums(cache));
  tried.push(`the Playwright cache ${cache}`);
  const dirs = (s.env.PATH ?? "").split(delimiter).filter((d) => d !== "");
  for (const name of PATH_NAMES) candidates.push(...dirs.map((d) => join(d, name)));
  tried.push(`${PATH_NAMES.join(", ")} on PATH`);
  candidates.push(...s.installPaths);
  tried.push(...s.installPaths);
  const found = candidates.find(executable);
  return found ? { path: found } : { tried };
}

/** The message when no Chromium is found: where it looked and how to get one. */
export function chromiumMissing(tried: string[]): string {
  return [
    "No Chromium found for the console test. Looked at:",
    ...tried.map((t) => `  ${t}`),
    "Install one of: Debian/Ubuntu `apt-get install chromium` (.ci/run does), Fedora `dnf install chromium`,",
    "macOS `brew install --cask chromium`, or Playwright's build: `npx playwright-core install chromium`;",
    "or set CHROMIUM_PATH to a Chromium or Chrome executable.",
  ].join("\n");
}

/** findChromium for this machine. */
export function chromiumHere(playwrightPath: string | undefined): { path: string } | { tried: string[] } {
  return findChromium({ env: process.env, platform: process.platform, home: homedir(), playwrightPath, installPaths: INSTALL_PATHS });
}
