// Helpers shared by the Playwright specs.
import { expect, Page, Browser } from "@playwright/test";
import { spawn, ChildProcess } from "child_process";
import * as net from "net";
import * as path from "path";

/** The repository's root: the release build and its site are under `target/`. */
const root = path.resolve(__dirname, "../..");

/** A free TCP port on 127.0.0.1. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = net.createServer();
    probe.once("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const port = (probe.address() as net.AddressInfo).port;
      probe.close(() => resolve(port));
    });
  });
}

/** Starts a server of the release build on `port`, keeping its data in `dataDir`, with `env` added
 *  (specs that stop servers, or need settings of their own, run their own beside the suite's). */
export function startServer(port: number, dataDir: string, env: Record<string, string> = {}): ChildProcess {
  return spawn(path.join(root, "target/release/groupchat"), [], {
    cwd: root,
    env: {
      ...process.env,
      ...env,
      LEPTOS_SITE_ROOT: path.join(root, "target/site"),
      LEPTOS_SITE_ADDR: `127.0.0.1:${port}`,
      LEPTOS_OUTPUT_NAME: "groupchat",
      DATA_DIR: dataDir,
    },
    stdio: "ignore",
  });
}

/** The operator's admin API token on the test server (playwright.config.ts). */
export const ADMIN_TOKEN = "e2e-operator-token";

/** A name no other test uses, so tests sharing the one server never clash. */
export function unique(base: string): string {
  return `${base}-${Math.random().toString(36).slice(2, 8)}`;
}

/** Opens `path` as `name` in a fresh browser context (its own cookies: another person), connected. */
export async function open(browser: Browser, path: string, name: string): Promise<Page> {
  const page = await (await browser.newContext()).newPage();
  await page.goto(`${path}?name=${encodeURIComponent(name)}`);
  // "open" means hydrated, socket open and welcomed by the server.
  await expect(page.locator(".status")).toHaveAttribute("data-state", "open");
  return page;
}

/** Types `text` and sends it with Enter; the input clears. */
export async function send(page: Page, text: string) {
  const input = page.getByLabel("Message");
  await input.fill(text);
  await input.press("Enter");
  await expect(input).toHaveValue("");
}

/** The texts of the delivered (not pending) messages on a page, in order. */
export async function delivered(page: Page): Promise<string[]> {
  return page.locator(".messages .message:not(.pending) .text").allTextContents();
}
