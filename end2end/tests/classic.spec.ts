import { test, expect, Page } from "@playwright/test";
import { open, send, unique } from "./support";

/** A line of the classic page (its list shows every frame received, verbatim). */
function line(classic: Page, text: string) {
  return classic.locator("#lines li").getByText(text, { exact: true });
}

/** A message on the new page from `from` saying `text`. */
function messageFrom(page: Page, from: string, text: string) {
  return page
    .locator(".messages .message")
    .filter({ has: page.locator("strong.from", { hasText: from }) })
    .filter({ has: page.locator(".text", { hasText: text }) });
}

test("the classic page and the new page chat both ways", async ({ browser }) => {
  const carol = unique("carol");
  const page = await open(browser, "/", carol);

  const classic = await (await browser.newContext()).newPage();
  await classic.goto("/classic");
  const id = (await classic.locator("#client-id").textContent())?.trim();
  expect(id).toMatch(/^\d+$/);
  const old = `Client #${id}`;
  // In the room once the new page lists it; its socket open once the page's own `ws` says so.
  await expect(page.locator(".online li", { hasText: old })).toBeVisible();
  await classic.waitForFunction(() => (window as any).ws.readyState === WebSocket.OPEN);

  // Classic → both: the classic page shows its own message as the original server sent it.
  const input = classic.getByLabel("Message");
  await input.fill("hello from the classic page");
  await input.press("Enter");
  await expect(input).toHaveValue("");
  await expect(line(classic, `${old} says: hello from the classic page`)).toHaveCount(1);
  await expect(messageFrom(page, old, "hello from the classic page")).toHaveCount(1);

  // New → classic: the new page's name stands where `Client #id` stood.
  await send(page, "hello from the new page");
  await expect(line(classic, `${carol} says: hello from the new page`)).toHaveCount(1);
  await expect(messageFrom(page, carol, "hello from the new page")).toHaveCount(1);

  // Nothing but those lines: no JSON reached the classic page.
  for (const text of await classic.locator("#lines li").allTextContents()) {
    expect(text).not.toMatch(/^\{/);
  }

  // Leaves, both ways.
  await page.context().close();
  await expect(line(classic, `${carol} left the chat`)).toHaveCount(1);
  const watcher = await open(browser, "/", unique("watcher"));
  await expect(watcher.locator(".online li", { hasText: old })).toBeVisible();
  await classic.context().close();
  await expect(watcher.locator(".online li", { hasText: old })).toHaveCount(0);
});
