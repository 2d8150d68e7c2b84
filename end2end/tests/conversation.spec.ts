import { test, expect, Page } from "@playwright/test";
import { ADMIN_TOKEN, open, send, unique } from "./support";

// What the page shows of the conversation features (issue 12), as another client makes them: a
// terminal-style client on a plain WebSocket in the browser (the page has no buttons for them yet).

/** A second client on `/ws` inside `page`'s browser: sends JSON frames, and waits for acks. */
async function client(page: Page, name: string) {
  await page.evaluate(async (name) => {
    const ws = new WebSocket(`${location.origin.replace("http", "ws")}/ws?name=${name}`);
    const w = window as any;
    w.acks = [];
    w.joined = [];
    w.ws = ws;
    ws.onmessage = (event) => {
      const frame = JSON.parse(event.data);
      if (frame.type === "ack") w.acks.push(frame.seq);
      if (frame.type === "joined") w.joined.push(frame.room);
    };
    await new Promise((resolve) => ws.addEventListener("open", resolve));
  }, name);
  return {
    /** Follows `room`. */
    join: async (room: string) => {
      await page.evaluate((room) => (window as any).ws.send(JSON.stringify({ type: "join", room })), room);
      await expect.poll(() => page.evaluate(() => (window as any).joined)).toContain(room);
    },
    /** Sends `frame` and returns the seq of its ack. */
    send: async (frame: object): Promise<number> => {
      const before = await page.evaluate(() => (window as any).acks.length);
      await page.evaluate((frame) => (window as any).ws.send(JSON.stringify(frame)), frame);
      await expect.poll(() => page.evaluate(() => (window as any).acks.length)).toBeGreaterThan(before);
      return page.evaluate(() => { const acks = (window as any).acks; return acks[acks.length - 1]; });
    },
  };
}

test("formatted, quoted, edited, deleted and reacted messages show live and after a reload", async ({ browser }) => {
  const room = unique("talk");
  const ann = await open(browser, `/r/${room}`, unique("ann"));
  const other = await open(browser, `/r/${room}`, unique("viewer"));
  const bob = await client(other, unique("bob"));
  await bob.join(room);

  const formatted = await bob.send({
    type: "message",
    room,
    text: "**bold** and `code` <script>alert(1)</script> [x](javascript:alert(1))",
  });
  const line = (seq: number) => ann.locator(`.messages li[data-seq="${seq}"]`);
  await expect(line(formatted).locator(".text strong")).toHaveText("bold");
  await expect(line(formatted).locator(".text code")).toHaveText("code");
  await expect(line(formatted).locator(".text")).toContainText("<script>alert(1)</script>");
  await expect(line(formatted).locator("script")).toHaveCount(0);
  await expect(line(formatted).locator("a[href^='javascript']")).toHaveCount(0);

  const reply = await bob.send({ type: "message", room, text: "a reply", reply_to: formatted });
  await expect(line(reply).locator(".quote")).toContainText("**bold** and");
  await bob.send({ type: "edit", room, seq: formatted, text: "now *plain-ish*" });
  await expect(line(formatted).locator(".text em")).toHaveText("plain-ish");
  await expect(line(formatted).locator(".edited")).toBeVisible();
  await bob.send({ type: "react", room, seq: reply, emoji: "👍" });
  await expect(line(reply).locator(".reaction")).toHaveText("👍 1");
  await bob.send({ type: "delete", room, seq: formatted });
  await expect(line(formatted).locator(".text")).toHaveText("message deleted");
  await expect(line(reply).locator(".quote")).toContainText("message deleted");

  // A reload renders the same from the server's history: as things are now.
  await ann.reload();
  await expect(ann.locator(".status")).toHaveAttribute("data-state", "open");
  await expect(line(formatted).locator(".text")).toHaveText("message deleted");
  await expect(line(reply).locator(".reaction")).toHaveText("👍 1");
  await expect(line(reply).locator(".quote")).toContainText("message deleted");
});

/** The line of the delivered message whose text is `text`, on `page`. */
function lineOf(page: Page, text: string) {
  return page.locator(".messages li.message[data-seq]").filter({ has: page.locator(".text", { hasText: text }) });
}

test("people reply, react, edit and delete with the page's own buttons, and each sees it at once", async ({ browser }) => {
  const room = unique("buttons");
  const annName = unique("ann");
  const bobName = unique("bob");
  const ann = await open(browser, `/r/${room}`, annName);
  const bob = await open(browser, `/r/${room}`, bobName);
  await send(bob, "hello there");
  const hello = lineOf(ann, "hello there");
  await expect(hello).toBeVisible();

  // A reply, from the message's own button: the composer says what it answers, and the reply carries a
  // quote of it for everyone.
  await hello.hover();
  await hello.getByRole("button", { name: "Reply" }).click();
  await expect(ann.locator(".composing")).toContainText(`Replying to`);
  await expect(ann.locator(".composing")).toContainText("hello there");
  await send(ann, "hi back");
  await expect(ann.locator(".composing")).toBeHidden();
  const reply = lineOf(bob, "hi back");
  await expect(reply.locator(".quote")).toContainText("hello there");

  // A reaction from the picker; the same emoji's chip toggles it, and counts each person once.
  await hello.hover();
  await hello.getByRole("button", { name: "Add a reaction" }).click();
  await ann.getByRole("button", { name: "React with 🎉" }).click();
  await expect(ann.locator(".picker")).toBeHidden();
  const bobsHello = lineOf(bob, "hello there");
  await expect(bobsHello.locator(".reaction")).toHaveText("🎉 1");
  await expect(hello.locator(".reaction")).toHaveAttribute("aria-pressed", "true");
  await expect(bobsHello.locator(".reaction")).toHaveAttribute("aria-pressed", "false");
  await bobsHello.locator(".reaction").click();
  await expect(hello.locator(".reaction")).toHaveText("🎉 2");
  await bobsHello.locator(".reaction").click();
  await expect(hello.locator(".reaction")).toHaveText("🎉 1");
  // A typed one.
  await hello.hover();
  await hello.getByRole("button", { name: "Add a reaction" }).click();
  await ann.getByLabel("Another emoji").fill("🦀");
  await ann.getByLabel("Another emoji").press("Enter");
  await expect(bobsHello.locator(".reaction", { hasText: "🦀" })).toHaveText("🦀 1");
  // Who reacted: a message tapped open writes it out beside each reaction (phones have no hover).
  await bobsHello.locator(".text").click();
  await expect(bobsHello).toHaveClass(/open/);
  const names = await bobsHello
    .locator(".reaction", { hasText: "🎉" })
    .evaluate((chip) => getComputedStyle(chip, "::after").content);
  expect(names).toContain(annName);

  // Only the author may edit or delete: bob has no such buttons on ann's reply.
  await reply.hover();
  await expect(reply.getByRole("button", { name: "Reply" })).toBeVisible();
  await expect(reply.getByRole("button", { name: "Edit" })).toHaveCount(0);
  await expect(reply.getByRole("button", { name: "Delete" })).toHaveCount(0);

  // Ann edits her reply: the composer takes its text, Enter saves it, and bob sees it marked.
  const annsReply = lineOf(ann, "hi back");
  await annsReply.hover();
  await annsReply.getByRole("button", { name: "Edit" }).click();
  const input = ann.getByLabel("Message");
  await expect(input).toHaveValue("hi back");
  await expect(ann.locator(".composing")).toContainText("Editing your message");
  await input.fill("hi back, edited");
  await input.press("Enter");
  const edited = lineOf(bob, "hi back, edited");
  await expect(edited.locator(".edited")).toBeVisible();
  // Escape drops an edit, and its text.
  await annsReply.hover();
  await lineOf(ann, "hi back, edited").getByRole("button", { name: "Edit" }).click();
  await input.press("Escape");
  await expect(input).toHaveValue("");
  await expect(ann.locator(".composing")).toBeHidden();

  // And deletes it, once she has confirmed.
  const seq = await edited.getAttribute("data-seq");
  ann.once("dialog", (dialog) => dialog.accept());
  const toDelete = lineOf(ann, "hi back, edited");
  await toDelete.hover();
  await toDelete.getByRole("button", { name: "Delete" }).click();
  await expect(bob.locator(`.messages li[data-seq="${seq}"] .text`)).toHaveText("message deleted");

  // Clicking a quote brings its original into view, loading older history if it must: after more than
  // a page of messages, a reload renders only the latest, and the quote still finds the first one.
  for (let i = 0; i < 55; i++) await send(bob, `filler ${i}`);
  await bobsHello.hover();
  await bobsHello.getByRole("button", { name: "Reply" }).click();
  await send(bob, "about that first one");
  // Stored (bob's page sends in order, one at a time, and the rate limit makes some wait): then
  // someone new to the room gets its latest page only.
  await expect(lineOf(bob, "about that first one")).toBeVisible();
  const cy = await open(browser, `/r/${room}`, unique("cy"));
  await expect(lineOf(cy, "about that first one")).toBeVisible();
  await expect(lineOf(cy, "hello there")).toHaveCount(0);
  await lineOf(cy, "about that first one").locator(".quote").click();
  await expect(lineOf(cy, "hello there")).toBeInViewport();
});

test("an @ offers the people in the room, a mention of you stands out, and a room's unread count and divider show where you left off", async ({ browser }) => {
  const room = unique("mentions");
  const other = unique("elsewhere");
  const annName = unique("ann");
  const bobName = unique("bob");
  const ann = await open(browser, `/r/${room}`, annName);
  const bob = await open(browser, `/r/${room}`, bobName);
  await send(ann, "ann is here");
  await expect(lineOf(bob, "ann is here")).toBeVisible();

  // Bob types "@" and the start of ann's name: she is offered; Enter takes her name.
  const input = bob.getByLabel("Message");
  await input.fill("");
  await input.pressSequentially(`hey @${annName.slice(0, 3)}`);
  const offer = bob.getByRole("listbox", { name: "People to mention" });
  await expect(offer.getByRole("option", { name: annName })).toBeVisible();
  await expect(offer.getByRole("option", { name: bobName })).toHaveCount(0);
  await input.press("Enter");
  await expect(input).toHaveValue(`hey @${annName} `);
  await input.pressSequentially("look");
  await input.press("Enter");
  await expect(lineOf(ann, "look")).toHaveClass(/to-me/);
  await expect(lineOf(bob, "look")).not.toHaveClass(/to-me/);
  // The mention itself is marked in the text, for everyone.
  for (const page of [ann, bob]) {
    await expect(lineOf(page, "look").locator(".mention")).toHaveText(`@${annName}`);
  }

  // Ann goes to another room (in the page: it still follows the first); bob says two things there, one
  // mentioning her.
  await ann.getByLabel("Room name").fill(other);
  await ann.getByLabel("Room name").press("Enter");
  await expect(ann.locator("main.room")).toHaveAttribute("data-room", other);
  await send(bob, "while you were away");
  await send(bob, `@${annName} ping`);
  const badge = ann.locator(`.rooms li[data-room="${room}"] .unread`);
  await expect(badge).toHaveText("@ 2");
  await expect(badge).toHaveClass(/mentioned/);

  // Back in the room: the divider sits above the first message she had not read, and the badge goes.
  await ann.locator(`.rooms li[data-room="${room}"] a`).click();
  const divider = ann.locator(".unread-divider");
  await expect(divider).toBeVisible();
  const after = ann.locator(".unread-divider + li .text, .unread-divider + li.day + li .text").first();
  await expect(after).toHaveText("while you were away");
  await expect(badge).toHaveText("");
  // Read, and stored: after a reload there is nothing new, so no divider.
  await ann.waitForTimeout(500);
  await ann.reload();
  await expect(ann.locator(".status")).toHaveAttribute("data-state", "open");
  await expect(lineOf(ann, "ping")).toBeVisible();
  await ann.waitForTimeout(500);
  await expect(ann.locator(".unread-divider")).toHaveCount(0);
});

test("someone the operator bans is closed out with a clear message, and cannot come back", async ({ browser, request }) => {
  const room = unique("moderated");
  const bobName = unique("bob");
  const bob = await open(browser, `/r/${room}`, bobName);
  await send(bob, "spam spam");
  const banned = await request.post("/api/admin/bans", {
    headers: { Authorization: `Bearer ${ADMIN_TOKEN}` },
    data: { name: bobName, reason: "spam" },
  });
  expect(banned.status()).toBe(201);
  await expect(bob.locator(".status")).toHaveAttribute("data-state", "closed");
  await expect(bob.locator(".status")).toContainText(/banned/i);
  await bob.reload();
  await expect(bob.locator(".status")).toHaveAttribute("data-state", "closed");
  await expect(bob.locator(".status")).toContainText(/banned/i);
});

test("search finds a message, marks the words, and takes the reader to it in its room", async ({ browser }) => {
  const room = unique("searchable");
  const word = `zebra${Math.random().toString(36).slice(2, 7)}`;
  const ann = await open(browser, `/r/${room}`, unique("ann"));
  await send(ann, `the ${word} crossed`);
  for (let i = 0; i < 55; i++) await send(ann, `noise ${i}`);
  // All stored (the rate limit makes some wait), so the hit is more than a page back.
  await expect(lineOf(ann, "noise 54")).toBeVisible();
  // From another room, searching every room.
  const reader = await open(browser, "/", unique("reader"));
  await reader.getByRole("button", { name: "Search", exact: true }).click();
  await reader.getByRole("searchbox", { name: "Words to find" }).fill(word);
  await reader.getByLabel("All rooms").check();
  await reader.getByRole("searchbox", { name: "Words to find" }).press("Enter");
  const hit = reader.locator(".hit", { hasText: word });
  await expect(hit.locator("mark")).toHaveText(word);
  await expect(hit.locator(".hit-place")).toContainText(`#${room}`);
  await hit.click();
  await expect(reader.locator("main.room")).toHaveAttribute("data-room", room);
  await expect(reader.locator(".search-panel")).toBeHidden();
  // More than a page back: loaded, and in view.
  await expect(lineOf(reader, `the ${word} crossed`)).toBeInViewport();
});

test("the bell asks for notifications on its click only, then a mention while the tab is hidden notifies", async ({ browser }) => {
  const room = unique("bell");
  const annName = unique("ann");
  const context = await browser.newContext();
  // The browser's Notification, recorded (a real one needs a real prompt), and the tab's visibility.
  await context.addInitScript(() => {
    const w = window as any;
    w.notes = [];
    w.asked = 0;
    w.hidden = false;
    class Recorded {
      static permission = "default";
      static requestPermission() {
        w.asked += 1;
        Recorded.permission = "granted";
        return Promise.resolve("granted");
      }
      constructor(title: string, options?: { body?: string }) {
        w.notes.push({ title, body: options?.body });
      }
    }
    w.Notification = Recorded;
    Object.defineProperty(document, "hidden", { get: () => w.hidden });
  });
  const ann = await context.newPage();
  await ann.goto(`/r/${room}?name=${annName}`);
  await expect(ann.locator(".status")).toHaveAttribute("data-state", "open");
  const bob = await open(browser, `/r/${room}`, unique("bob"));
  const bell = ann.getByRole("button", { name: "Notify me of mentions" });
  await expect(bell).toHaveAttribute("aria-pressed", "false");
  expect(await ann.evaluate(() => (window as any).asked)).toBe(0);
  await bell.click();
  await expect(bell).toHaveAttribute("aria-pressed", "true");
  expect(await ann.evaluate(() => (window as any).asked)).toBe(1);

  await ann.evaluate(() => {
    (window as any).hidden = true;
    document.dispatchEvent(new Event("visibilitychange", { bubbles: true }));
  });
  await send(bob, "not about anyone");
  await send(bob, `@${annName} look at this`);
  await expect.poll(() => ann.evaluate(() => (window as any).notes)).toHaveLength(1);
  const [note] = await ann.evaluate(() => (window as any).notes);
  expect(note.title).toContain(`mentioned you in #${room}`);
  expect(note.body).toBe(`@${annName} look at this`);
});
