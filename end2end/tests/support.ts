// Helpers shared by the Playwright specs.
import { expect, Page, Browser } from "@playwright/test";

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
