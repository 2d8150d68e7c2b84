import { test, expect, Page, Browser } from "@playwright/test";
import { open, send, unique } from "./support";

/** Opens the chat as `name` in a fresh browser context (its own cookies and storage, like another person). */
async function openChat(browser: Browser, name: string): Promise<Page> {
  const page = await open(browser, "/", name);
  await expect(page.getByTestId("my-name")).toHaveText(name);
  return page;
}

async function sendWithButton(page: Page, text: string) {
  const input = page.getByLabel("Message");
  await input.fill(text);
  await page.getByRole("button", { name: "Send" }).click();
  await expect(input).toHaveValue("");
}

function messageFrom(page: Page, from: string, text: string) {
  return page
    .locator(".messages .message")
    .filter({ has: page.locator("strong.from", { hasText: from }) })
    .filter({ has: page.locator(".text", { hasText: text }) });
}

test("the page is server-rendered before any script runs", async ({ browser }) => {
  const context = await browser.newContext({ javaScriptEnabled: false });
  const page = await context.newPage();
  await page.goto("/");
  await expect(page).toHaveTitle("Group chat");
  await expect(page.locator(".status")).toHaveText(/connecting/);
  await expect(page.getByLabel("Message")).toBeVisible();
  await context.close();
});

test("two people chat both ways, names in bold", async ({ browser }) => {
  const ann = unique("ann");
  const bob = unique("bob");
  const annPage = await openChat(browser, ann);
  const bobPage = await openChat(browser, bob);

  // Ann sees Bob arrive, and both see each other online.
  await expect(annPage.locator(".notice.join", { hasText: bob })).toBeVisible();
  await expect(annPage.locator(".online li", { hasText: bob })).toBeVisible();
  await expect(bobPage.locator(".online li", { hasText: ann })).toBeVisible();

  await send(annPage, "Hello Bob!");
  await expect(messageFrom(bobPage, ann, "Hello Bob!")).toHaveCount(1);
  await expect(messageFrom(annPage, ann, "Hello Bob!")).toHaveCount(1);

  await sendWithButton(bobPage, "Hi Ann, loud and clear.");
  await expect(messageFrom(annPage, bob, "Hi Ann, loud and clear.")).toHaveCount(1);

  // The sender's name is a <strong>, and it renders bold.
  const from = annPage.locator(".messages .message strong.from", { hasText: bob }).first();
  await expect(from).toBeVisible();
  const weight = await from.evaluate((el) => Number(getComputedStyle(el).fontWeight));
  expect(weight).toBeGreaterThanOrEqual(600);

  // Own messages are marked as such on the sender's page only.
  await expect(messageFrom(annPage, ann, "Hello Bob!")).toHaveClass(/mine/);
  await expect(messageFrom(bobPage, ann, "Hello Bob!")).not.toHaveClass(/mine/);
});

test("message text is shown as text, never run as HTML", async ({ browser }) => {
  const mallory = unique("mallory");
  const victim = unique("victim");
  const attackerPage = await openChat(browser, mallory);
  const victimPage = await openChat(browser, victim);
  const dialogs: string[] = [];
  for (const page of [attackerPage, victimPage]) {
    page.on("dialog", async (dialog) => {
      dialogs.push(dialog.message());
      await dialog.dismiss();
    });
  }

  const payload = "<img src=x onerror=alert(1)><script>alert(2)</script><b>bold?</b>";
  await send(attackerPage, payload);

  const shown = messageFrom(victimPage, mallory, "onerror=alert(1)");
  await expect(shown).toHaveCount(1);
  await expect(shown.locator(".text")).toHaveText(payload);
  await expect(victimPage.locator(".messages img")).toHaveCount(0);
  await expect(victimPage.locator(".messages .text b")).toHaveCount(0);
  // Give a would-be onerror handler time to fire before concluding it never did.
  await victimPage.waitForTimeout(300);
  expect(dialogs).toEqual([]);
});

test("closing a page shows its leave notice to the others", async ({ browser }) => {
  const stays = unique("stays");
  const goes = unique("goes");
  const stayPage = await openChat(browser, stays);
  const goPage = await openChat(browser, goes);
  await expect(stayPage.locator(".online li", { hasText: goes })).toBeVisible();

  await goPage.context().close();

  await expect(stayPage.locator(".notice.leave", { hasText: goes })).toBeVisible();
  await expect(stayPage.locator(".online li", { hasText: goes })).toHaveCount(0);
});

test("a name already in use is refused with a clear message", async ({ browser }) => {
  const name = unique("dup");
  await openChat(browser, name);
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(`/?name=${encodeURIComponent(name)}`);
  await expect(page.locator(".status")).toHaveAttribute("data-state", "closed");
  await expect(page.locator(".messages .error")).toContainText("already in use");

  // Picking another name from the page connects.
  const other = unique("other");
  await page.getByLabel("New name").fill(other);
  await page.getByRole("button", { name: "Change name" }).click();
  await expect(page.locator(".status")).toHaveAttribute("data-state", "open");
  await expect(page.getByTestId("my-name")).toHaveText(other);
});

test("a visitor without a chosen name gets one assigned", async ({ page }) => {
  await page.goto("/");
  await expect(page.locator(".status")).toHaveAttribute("data-state", "open");
  const name = (await page.getByTestId("my-name").textContent())?.trim() ?? "";
  expect(name.length).toBeGreaterThan(0);
  expect(name).not.toBe("…");
  await expect(page.locator(".online li", { hasText: name })).toBeVisible();
});

test("a message over the size limit is refused on the page, and the link stays up", async ({ browser }) => {
  const name = unique("wordy");
  const page = await openChat(browser, name);
  await page.getByLabel("Message").fill("x".repeat(70_000));
  await page.getByLabel("Message").press("Enter");
  await expect(page.locator(".messages .error")).toContainText("too long");
  await expect(page.locator(".messages .pending")).toHaveCount(0);
  await expect(page.locator(".status")).toHaveAttribute("data-state", "open");
  await send(page, "short and sweet");
  await expect(messageFrom(page, name, "short and sweet")).toHaveCount(1);
});
