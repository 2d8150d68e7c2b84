import { test, expect, Page, Browser, BrowserContextOptions, TestInfo } from "@playwright/test";
import AxeBuilder from "@axe-core/playwright";
import { open, send, unique } from "./support";

// The page's look and feel (issue 11): grouping and avatars, local times, the themes, the keyboard,
// phones, and accessibility (axe-core), with screenshots of each theme at desktop and phone sizes.

const DESKTOP = { width: 1280, height: 800 };
const PHONE = { width: 375, height: 812 };

/** Opens `path` as `name` in a fresh context with `options` (viewport, color scheme, time zone…). */
async function openWith(browser: Browser, path: string, name: string, options: BrowserContextOptions): Promise<Page> {
  const page = await (await browser.newContext(options)).newPage();
  const sep = path.includes("?") ? "&" : "?";
  await page.goto(`${path}${sep}name=${encodeURIComponent(name)}`);
  await expect(page.locator(".status")).toHaveAttribute("data-state", "open");
  return page;
}

/** The message rows of the page, each as what it shows: name (if shown), avatar initials, text. */
function rows(page: Page) {
  return page.locator(".messages .message:not(.pending)");
}

/** FNV-1a 32 of the name's UTF-8 bytes, mod 360: the avatar's hue, as src/app/avatar.rs computes it. */
function hue(name: string): number {
  let hash = 0x811c9dc5;
  for (const byte of Buffer.from(name, "utf8")) {
    hash ^= byte;
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return hash % 360;
}

/** The root's computed background colour, as `rgb(r, g, b)`. */
function rootBackground(page: Page): Promise<string> {
  return page.evaluate(() => getComputedStyle(document.documentElement).backgroundColor);
}

/** Whether an `rgb()` colour is dark (its mean channel below the middle). */
function isDark(rgb: string): boolean {
  const [r, g, b] = (rgb.match(/\d+(\.\d+)?/g) ?? []).map(Number);
  return (r + g + b) / 3 < 128;
}

test("consecutive messages from one sender share one name and one avatar; the next sender starts anew", async ({
  browser,
}) => {
  const room = unique("group");
  const ann = unique("ann");
  const bob = unique("bob");
  const annPage = await open(browser, `/r/${room}`, ann);
  const bobPage = await open(browser, `/r/${room}`, bob);
  await expect(annPage.locator(".online li")).toHaveCount(2);

  for (const text of ["one", "two", "three"]) await send(annPage, text);
  await send(bobPage, "four");
  await send(annPage, "five");

  for (const page of [annPage, bobPage]) {
    const shown = rows(page);
    await expect(shown.locator(".text")).toHaveText(["one", "two", "three", "four", "five"]);
    // Group heads: one, four (bob), five (ann again). Only they show the name and the avatar.
    await expect(shown).toHaveClass([/\bhead\b/, /^(?!.*\bhead\b)/, /^(?!.*\bhead\b)/, /\bhead\b/, /\bhead\b/]);
    await expect(shown.locator(".avatar")).toHaveCount(3);
    const names = shown.locator("strong.from");
    // Every message keeps its sender's name for screen readers; on screen only the heads show it.
    await expect(names).toHaveText([ann, ann, ann, bob, ann]);
    const visible = await names.evaluateAll((els) => els.map((el) => (el as HTMLElement).getBoundingClientRect().width > 1));
    expect(visible).toEqual([true, false, false, true, true]);
    const weight = await names.first().evaluate((el) => Number(getComputedStyle(el).fontWeight));
    expect(weight).toBeGreaterThanOrEqual(600);

    // The avatar: the initials of the name's first two words, upper-cased, on the name's own hue.
    const avatar = shown.nth(0).locator(".avatar");
    await expect(avatar).toHaveText(`${ann[0]}${ann.split("-")[1][0]}`.toUpperCase(), { useInnerText: true });
    await expect(avatar).toHaveAttribute("style", `--hue:${hue(ann)}`);
    await expect(shown.nth(3).locator(".avatar")).toHaveAttribute("style", `--hue:${hue(bob)}`);
    await expect(avatar).toHaveAttribute("aria-hidden", "true");
  }
  // The same person gets the same colour on every page.
  const colour = (page: Page) => rows(page).nth(0).locator(".avatar").evaluate((el) => getComputedStyle(el).backgroundColor);
  expect(await colour(annPage)).toBe(await colour(bobPage));

  // Yours are marked on your page only.
  await expect(rows(annPage).nth(0)).toHaveClass(/\bmine\b/);
  await expect(rows(bobPage).nth(0)).not.toHaveClass(/\bmine\b/);
  await expect(rows(bobPage).nth(3)).toHaveClass(/\bmine\b/);

  // One day heading above the first message, in local time after hydration: "Today".
  await expect(bobPage.locator(".messages .day")).toHaveText(["Today"]);
});

test("times are in the reader's zone from the first frame after hydration, with the full date on hover", async ({
  browser,
}) => {
  const room = unique("tz");
  const writer = await open(browser, `/r/${room}`, unique("writer"));
  await send(writer, "what time is it?");
  await expect(rows(writer)).toHaveCount(1);

  const context = await browser.newContext({ timezoneId: "Asia/Tokyo", locale: "en-GB" });
  const page = await context.newPage();
  // Every frame from the first one: the first message's time, and whether the WASM has taken over.
  await page.addInitScript(() => {
    const frames: { hydrated: boolean; text: string | null }[] = [];
    (window as any).__frames = frames;
    const tick = () => {
      frames.push({
        hydrated: document.documentElement.hasAttribute("data-hydrated"),
        text: document.querySelector(".messages time")?.textContent ?? null,
      });
      if (frames.length < 2000) requestAnimationFrame(tick);
    };
    requestAnimationFrame(tick);
  });
  await page.goto(`/r/${room}?name=${unique("tokyo")}`);
  await expect(page.locator(".status")).toHaveAttribute("data-state", "open");

  const time = page.locator(".messages .message time").first();
  const datetime = (await time.getAttribute("datetime"))!;
  expect(datetime).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
  const at = new Date(datetime);
  const tokyo = (options: Intl.DateTimeFormatOptions) =>
    new Intl.DateTimeFormat("en-GB", { timeZone: "Asia/Tokyo", ...options }).format(at);
  const expected = tokyo({ hour: "numeric", minute: "2-digit" });
  const utc = datetime.slice(11, 16);
  expect(expected, "Tokyo is 9 hours ahead: the test can tell the zones apart").not.toBe(utc);

  const frames: { hydrated: boolean; text: string | null }[] = await page.evaluate(() => (window as any).__frames);
  const first = frames.findIndex((f) => f.hydrated);
  expect(first, JSON.stringify(frames.slice(0, 20))).toBeGreaterThanOrEqual(0);
  // Before hydration the page shows what the server rendered (UTC); from the first frame after it,
  // the reader's time, and never UTC again.
  expect(frames.slice(0, first).every((f) => f.text === null || f.text === utc)).toBe(true);
  expect(frames[first].text).toBe(expected);
  expect(frames.slice(first).every((f) => f.text === expected)).toBe(true);

  await expect(time).toHaveText(expected);
  await expect(time).toHaveAttribute("title", tokyo({ dateStyle: "full", timeStyle: "medium" }));
  await context.close();
});

test("the page is rendered in UTC without JavaScript, and says so", async ({ browser }) => {
  const room = unique("utc");
  const writer = await open(browser, `/r/${room}`, unique("writer"));
  await send(writer, "server side");
  await expect(rows(writer)).toHaveCount(1);
  const context = await browser.newContext({ javaScriptEnabled: false, timezoneId: "Asia/Tokyo" });
  const page = await context.newPage();
  await page.goto(`/r/${room}`);
  const time = page.locator(".messages .message time");
  const datetime = (await time.getAttribute("datetime"))!;
  await expect(time).toHaveText(datetime.slice(11, 16));
  await expect(time).toHaveAttribute("title", / UTC$/);
  await expect(page.locator(".messages .day")).toHaveText([/\(UTC\)$/]);
  await context.close();
});

test("the dark theme follows the system's color scheme, before any script of the app runs", async ({ browser }) => {
  for (const colorScheme of ["dark", "light"] as const) {
    const context = await browser.newContext({ colorScheme, javaScriptEnabled: false });
    const page = await context.newPage();
    await page.goto("/");
    expect(isDark(await rootBackground(page))).toBe(colorScheme === "dark");
    expect(await page.evaluate(() => getComputedStyle(document.body).color)).toBe(
      colorScheme === "dark" ? "rgb(231, 233, 238)" : "rgb(26, 30, 38)",
    );
    await context.close();
  }
  const page = await (await browser.newContext({ colorScheme: "dark" })).newPage();
  await page.goto("/");
  await expect(page.getByRole("button", { name: "Dark theme" })).toHaveAttribute("aria-pressed", "true");
});

test("the theme toggle is remembered, and a reload paints in it from the first frame", async ({ browser }) => {
  // The system is light; the reader picks dark.
  const context = await browser.newContext({ colorScheme: "light" });
  const page = await context.newPage();
  // At the first frame and at DOMContentLoaded: the theme and the background. And at the moment the
  // theme is first set: whether the WASM had taken over yet (it must not have: the head script sets
  // it). The first frame itself may come after a fast hydration, so it cannot tell who set it.
  await page.addInitScript(() => {
    const seen: Record<string, unknown> = {};
    (window as any).__seen = seen;
    const look = (when: string) => () => {
      seen[when] = {
        theme: document.documentElement.dataset.theme ?? null,
        background: getComputedStyle(document.documentElement).backgroundColor,
      };
    };
    requestAnimationFrame(look("firstFrame"));
    document.addEventListener("DOMContentLoaded", look("loaded"));
    new MutationObserver((changes, observer) => {
      const root = document.documentElement;
      if (root?.dataset.theme === undefined || seen.themeSet) return;
      seen.themeSet = { theme: root.dataset.theme, hydrated: root.hasAttribute("data-hydrated") };
      observer.disconnect();
    }).observe(document, { subtree: true, childList: true, attributes: true, attributeFilter: ["data-theme"] });
  });
  await page.goto(`/?name=${unique("night")}`);
  await expect(page.locator(".status")).toHaveAttribute("data-state", "open");
  const toggle = page.getByRole("button", { name: "Dark theme" });
  await expect(toggle).toHaveAttribute("aria-pressed", "false");
  expect(isDark(await rootBackground(page))).toBe(false);

  await toggle.click();
  await expect(toggle).toHaveAttribute("aria-pressed", "true");
  await expect(page.locator("html")).toHaveAttribute("data-theme", "dark");
  expect(isDark(await rootBackground(page))).toBe(true);
  expect(await page.evaluate(() => localStorage.getItem("theme"))).toBe("dark");

  await page.reload();
  // The load event may come before the first frame.
  await page.waitForFunction(() => (window as any).__seen?.firstFrame && (window as any).__seen?.loaded);
  const seen: any = await page.evaluate(() => (window as any).__seen);
  for (const when of ["firstFrame", "loaded"]) {
    expect(seen[when], when).toBeTruthy();
    expect(seen[when].theme, when).toBe("dark");
    expect(isDark(seen[when].background), `${when}: ${seen[when].background}`).toBe(true);
  }
  expect(seen.themeSet).toEqual({ theme: "dark", hydrated: false });
  await expect(toggle).toHaveAttribute("aria-pressed", "true");

  // And back to light, which also sticks (over a dark system too).
  await toggle.click();
  await expect(page.locator("html")).toHaveAttribute("data-theme", "light");
  await page.emulateMedia({ colorScheme: "dark" });
  await page.reload();
  expect(isDark(await rootBackground(page))).toBe(false);
  await expect(toggle).toHaveAttribute("aria-pressed", "false");
  await context.close();
});

test("keyboard only: reach the composer, write two lines, send with Enter, switch rooms", async ({ browser }) => {
  const other = unique("kbd");
  // A room with someone in it, so that it shows in the list.
  await open(browser, `/r/${other}`, unique("host"));
  const name = unique("keys");
  const page = await openWith(browser, "/", name, { viewport: DESKTOP });
  // A panic in the WASM shows as a console error, and leaves the page dead.
  const panics: string[] = [];
  page.on("console", (m) => {
    if (m.type() === "error" && m.text().includes("panicked")) panics.push(m.text());
  });
  await expect(page.locator(`nav.rooms li[data-room="${other}"]`)).toBeVisible();

  /** Presses `key` until `done` holds for the focused element (at most 40 times). */
  async function tabTo(what: string, done: () => Promise<boolean>, key = "Tab") {
    for (let i = 0; i < 40; i++) {
      await page.keyboard.press(key);
      if (await done()) return;
    }
    throw new Error(`Tab never reached ${what}`);
  }
  const message = page.getByLabel("Message");
  await tabTo("the composer", () => message.evaluate((el) => el === document.activeElement));
  // Focus is visible: an outline drawn by :focus-visible.
  const outline = await message.evaluate((el) => getComputedStyle(el).outlineStyle);
  expect(outline).not.toBe("none");

  await page.keyboard.type("first line");
  await page.keyboard.press("Shift+Enter");
  await page.keyboard.type("second line");
  await expect(message).toHaveValue("first line\nsecond line");
  await page.keyboard.press("Enter");
  await expect(message).toHaveValue("");
  const sent = rows(page).filter({ hasText: "first line" });
  await expect(sent.locator(".text")).toHaveText("first line\nsecond line");
  // Shown on two lines.
  const height = await sent.locator(".text").evaluate((el) => el.getBoundingClientRect().height);
  const lineHeight = await sent.locator(".text").evaluate((el) => parseFloat(getComputedStyle(el).lineHeight));
  expect(height).toBeGreaterThan(lineHeight * 1.5);

  // To the other room, by its link in the list (back up the page).
  const link = page.locator(`nav.rooms li[data-room="${other}"] a`);
  await tabTo("the room's link", () => link.evaluate((el) => el === document.activeElement), "Shift+Tab");
  expect(await link.evaluate((el) => getComputedStyle(el).outlineStyle)).not.toBe("none");
  await page.keyboard.press("Enter");
  await expect(page).toHaveURL(new RegExp(`/r/${other}$`));
  await expect(page.locator("main.room")).toHaveAttribute("data-room", other);
  // And back, by the browser's history: the list follows, and nothing panicked on the way.
  await page.goBack();
  await expect(page.locator("main.room")).toHaveAttribute("data-room", "general");
  await expect(rows(page).filter({ hasText: "first line" })).toHaveCount(1);
  expect(panics).toEqual([]);
});

test("a long word wraps instead of widening the page", async ({ browser }) => {
  const page = await openWith(browser, `/r/${unique("wrap")}`, unique("wordy"), { viewport: PHONE });
  await send(page, "x".repeat(400));
  await expect(rows(page)).toHaveCount(1);
  const overflow = await page.evaluate(() => {
    const list = document.querySelector(".messages")!;
    return { list: list.scrollWidth - list.clientWidth, page: document.documentElement.scrollWidth - innerWidth };
  });
  expect(overflow).toEqual({ list: 0, page: 0 });
});

test("on a phone: a one-line top bar, the rooms in a drawer, the composer at the bottom, 44 px targets", async ({
  browser,
}) => {
  const other = unique("drawer");
  await open(browser, `/r/${other}`, unique("host"));
  const page = await openWith(browser, "/", unique("thumb"), { viewport: PHONE, hasTouch: true, isMobile: true });
  await expect(page.locator(`nav.rooms li[data-room="${other}"]`)).toHaveCount(1);

  // One line: the bar is no taller than a touch target and its padding.
  const bar = await page.locator(".topbar").boundingBox();
  expect(bar!.height).toBeLessThanOrEqual(56);
  await expect(page.locator(".top-room")).toHaveText("#general");
  // The composer is on screen, at the bottom; the room list is not.
  const composer = await page.locator(".composer").boundingBox();
  expect(composer!.y + composer!.height).toBeGreaterThan(PHONE.height - 20);
  expect(composer!.y + composer!.height).toBeLessThanOrEqual(PHONE.height);
  await expect(page.locator("#sidebar")).toBeHidden();

  // Every control on screen is at least 44 px each way (inline links in text aside: there are none).
  const small = await page.evaluate(() =>
    [...document.querySelectorAll("button, input, textarea, a")]
      .filter((el) => {
        const r = el.getBoundingClientRect();
        const visible = getComputedStyle(el).visibility !== "hidden" && r.width > 1 && r.height > 1;
        return visible && r.right > 0 && r.left < innerWidth && (r.width < 44 || r.height < 44);
      })
      .map((el) => `${el.tagName} ${el.getAttribute("aria-label") ?? el.textContent}`),
  );
  expect(small).toEqual([]);

  // The drawer: opened by its labelled button, closed by Escape (focus back on the button)…
  const toggle = page.getByRole("button", { name: "Rooms" });
  await expect(toggle).toHaveAttribute("aria-expanded", "false");
  await toggle.tap();
  await expect(toggle).toHaveAttribute("aria-expanded", "true");
  await expect(page.locator("#sidebar")).toBeVisible();
  // The new-room field is in the drawer, below the list (which the suite's many rooms make long: the
  // drawer scrolls to it).
  await page.getByLabel("Room name").scrollIntoViewIfNeeded();
  await expect(page.getByLabel("Room name")).toBeInViewport();
  await page.keyboard.press("Escape");
  await expect(page.locator("#sidebar")).toBeHidden();
  await expect(toggle).toBeFocused();
  // … by a tap beside it …
  await toggle.tap();
  await expect(page.locator("#sidebar")).toBeVisible();
  await page.mouse.click(PHONE.width - 10, PHONE.height / 2);
  await expect(page.locator("#sidebar")).toBeHidden();
  // … by its button again (the drawer opens below the top bar) …
  await toggle.tap();
  await expect(page.locator("#sidebar")).toBeVisible();
  await toggle.tap();
  await expect(page.locator("#sidebar")).toBeHidden();
  // … and by choosing a room, which opens it.
  await toggle.tap();
  await page.locator(`nav.rooms li[data-room="${other}"] a`).tap();
  await expect(page).toHaveURL(new RegExp(`/r/${other}$`));
  await expect(page.locator("#sidebar")).toBeHidden();
  await expect(page.locator(".top-room")).toHaveText(`#${other}`);
  await expect(page.locator("main.room")).toHaveAttribute("data-room", other);
});

/** A room with something of everything in it: two senders, a group, a notice, yours and theirs. */
async function busyRoom(browser: Browser): Promise<{ room: string; guest: Page }> {
  const room = unique("look");
  const guest = await open(browser, `/r/${room}`, unique("Ada Lovelace"));
  await send(guest, "Hello! Has anyone tried the new build? 🚀");
  await send(guest, "It compiles in half the time on my machine.");
  return { room, guest };
}

for (const [theme, colorScheme] of [
  ["light", "light"],
  ["dark", "dark"],
] as const) {
  for (const [size, viewport] of [
    ["desktop", DESKTOP],
    ["phone", PHONE],
  ] as const) {
    test(`axe finds no violations: ${theme}, ${size} (${viewport.width}×${viewport.height}); screenshot`, async ({
      browser,
    }, testInfo) => {
      const { room, guest } = await busyRoom(browser);
      const page = await openWith(browser, `/r/${room}`, unique("reader"), {
        viewport,
        colorScheme,
        isMobile: size === "phone",
        hasTouch: size === "phone",
      });
      await send(page, "Yes — and a long line to see how the text wraps when it goes on for a while.");
      await send(page, "Second message, same group.");
      await send(guest, "Great, thanks!");
      await expect(rows(page)).toHaveCount(5);
      await guest.close();
      await expect(page.locator(".notice.leave")).toHaveCount(1);
      expect(isDark(await rootBackground(page))).toBe(theme === "dark");

      await screenshot(page, testInfo, `${theme}-${viewport.width}x${viewport.height}`);
      await expectNoViolations(page, `${theme}, ${size}`);
      if (size === "phone") {
        await page.getByRole("button", { name: "Rooms" }).tap();
        await expect(page.locator("#sidebar")).toBeVisible();
        // Let the drawer finish sliding in.
        await page.waitForTimeout(300);
        await screenshot(page, testInfo, `${theme}-${viewport.width}x${viewport.height}-drawer`);
        await expectNoViolations(page, `${theme}, ${size}, drawer open`);
      }
    });
  }
}

async function expectNoViolations(page: Page, what: string) {
  const results = await new AxeBuilder({ page }).analyze();
  const found = results.violations.map(
    (v) => `${v.id} (${v.impact}): ${v.help}\n    ${v.nodes.map((n) => `${n.target.join(" ")}: ${n.failureSummary}`).join("\n    ")}`,
  );
  expect(found, `${what}:\n${found.join("\n")}`).toEqual([]);
}

/** Saves a screenshot in the test's output folder (kept as an artifact) and attaches it to the report. */
async function screenshot(page: Page, testInfo: TestInfo, name: string) {
  const path = testInfo.outputPath(`${name}.png`);
  await page.screenshot({ path });
  await testInfo.attach(name, { path, contentType: "image/png" });
}

test("a reader scrolled up is not moved by new messages: a pill counts them and jumps down", async ({ browser }) => {
  const room = unique("pill");
  const ann = await open(browser, `/r/${room}`, unique("ann"));
  const bob = await open(browser, `/r/${room}`, unique("bob"));
  for (let i = 0; i < 30; i++) await send(bob, `line ${i}\nwith a second line`);
  const list = ann.locator(".messages");
  await expect(list.locator(".message .text").last()).toContainText("line 29");
  await list.evaluate((l) => (l.scrollTop = 40));
  await ann.waitForTimeout(200);
  const top = await list.evaluate((l) => l.scrollTop);
  await send(bob, "news while you read");
  await send(bob, "more news");
  const pill = ann.locator(".pill");
  await expect(pill).toHaveText("2 new messages ↓");
  expect(await list.evaluate((l) => l.scrollTop)).toBe(top);
  await pill.click();
  await expect(pill).toBeHidden();
  await expect(list.locator(".message", { hasText: "more news" })).toBeInViewport();
});

test("while the tab is hidden, its title counts the messages that came", async ({ browser }) => {
  const room = unique("title");
  const context = await browser.newContext();
  // The tab's visibility, as the test sets it.
  await context.addInitScript(() => {
    const w = window as any;
    w.__hidden = false;
    Object.defineProperty(document, "hidden", { get: () => w.__hidden });
    Object.defineProperty(document, "visibilityState", { get: () => (w.__hidden ? "hidden" : "visible") });
  });
  const ann = await context.newPage();
  await ann.goto(`/r/${room}?name=${unique("ann")}`);
  await expect(ann.locator(".status")).toHaveAttribute("data-state", "open");
  const bob = await open(browser, `/r/${room}`, unique("bob"));
  await send(bob, "before");
  await expect(ann.locator(".message .text", { hasText: "before" })).toBeVisible();
  await expect(ann).toHaveTitle("Group chat");
  const visible = (shown: boolean) =>
    ann.evaluate((shown) => {
      (window as any).__hidden = !shown;
      document.dispatchEvent(new Event("visibilitychange", { bubbles: true }));
    }, shown);
  await visible(false);
  await send(bob, "one");
  await send(bob, "two");
  await expect(ann).toHaveTitle("(2) Group chat");
  await visible(true);
  await expect(ann).toHaveTitle("Group chat");
});
