import { test, expect, WebSocketRoute } from "@playwright/test";
import { delivered, open, send, unique } from "./support";

test("rooms are created by joining, switched between, and keep to themselves", async ({ browser }) => {
  const room = unique("room");
  const ann = await open(browser, "/", unique("ann"));
  await expect(ann.locator("main.room")).toHaveAttribute("data-room", "general");

  // Create a room from the form: the page moves to its URL.
  await ann.getByLabel("Room name").fill(room);
  await ann.getByRole("button", { name: "Go" }).click();
  await expect(ann).toHaveURL(new RegExp(`/r/${room}$`));
  await expect(ann.locator("main.room")).toHaveAttribute("data-room", room);
  await send(ann, `hello ${room}`);
  await expect.poll(() => delivered(ann)).toEqual([`hello ${room}`]);
  await expect(ann.locator(`nav.rooms li[data-room="${room}"]`)).toBeVisible();

  // Back to general through the room list: the other room's message is not there.
  await ann.locator("nav.rooms a", { hasText: "#general" }).click();
  await expect(ann).toHaveURL(/\/r\/general$/);
  await expect(ann.locator("main.room")).toHaveAttribute("data-room", "general");
  await expect(ann.locator(".messages .text", { hasText: `hello ${room}` })).toHaveCount(0);

  // Someone opening the room's link sees its history, and the people in it.
  const bob = await open(browser, `/r/${room}`, unique("bob"));
  await expect.poll(() => delivered(bob)).toEqual([`hello ${room}`]);
  await expect(bob.locator(".online li")).toHaveCount(2);

  // Ann still follows the room while looking at general: back in it, bob's message is there.
  await send(bob, "hi ann");
  await ann.locator(`nav.rooms li[data-room="${room}"] a`).click();
  await expect.poll(() => delivered(ann)).toEqual([`hello ${room}`, "hi ann"]);

  // A bad room name is refused on the page.
  await ann.getByLabel("Room name").fill("Not A Room!");
  await ann.getByRole("button", { name: "Go" }).click();
  await expect(ann.locator(".messages .error")).toContainText("room name");
});

test("a room's page shows its history without JavaScript", async ({ browser }) => {
  const room = unique("ssr");
  const writer = await open(browser, `/r/${room}`, unique("writer"));
  await send(writer, "rendered on the server");
  await expect.poll(() => delivered(writer)).toEqual(["rendered on the server"]);

  const context = await browser.newContext({ javaScriptEnabled: false });
  const page = await context.newPage();
  await page.goto(`/r/${room}`);
  await expect(page.locator(".messages .message .text")).toHaveText(["rendered on the server"]);
  await expect(page.locator(".messages strong.from")).toHaveText([/writer-/]);
  await context.close();
});

/** The typing line for one person: the page isolates each name (FSI … PDI), as `<bdi>` would. */
function typing(name: string): string {
  return `\u2068${name}\u2069 is typing…`;
}

test("the typing indicator appears and clears", async ({ browser }) => {
  const room = unique("typing");
  const typistName = unique("typist");
  const typist = await open(browser, `/r/${room}`, typistName);
  const reader = await open(browser, `/r/${room}`, unique("reader"));
  // Both have joined the room (its people are listed).
  for (const page of [typist, reader]) {
    await expect(page.locator(".online li")).toHaveCount(2);
  }

  await typist.getByLabel("Message").pressSequentially("hel");
  await expect(reader.locator(".typing")).toHaveText(typing(typistName));
  // The typist does not see itself typing.
  await expect(typist.locator(".typing")).toHaveText("");
  // Sending clears it at once.
  await typist.getByLabel("Message").press("Enter");
  await expect(reader.locator(".typing")).toHaveText("");

  // Typing on (for more than a moment) and then stopping: announced again, then the server lets it
  // expire.
  await typist.getByLabel("Message").pressSequentially("more", { delay: 600 });
  await expect(reader.locator(".typing")).toHaveText(typing(typistName));
  await expect(reader.locator(".typing")).toHaveText("", { timeout: 15_000 });
});

test("a dropped socket rejoins and gets exactly what it missed", async ({ browser }) => {
  const room = unique("drop");
  // Ann's socket goes through a test proxy that can cut it and hold reconnects back.
  const ann = await (await browser.newContext()).newPage();
  let blocked = false;
  let live: { page: WebSocketRoute; server: WebSocketRoute } | null = null;
  await ann.routeWebSocket(/\/ws/, (ws) => {
    if (blocked) {
      ws.close({ code: 4000, reason: "blocked by the test" });
      return;
    }
    live = { page: ws, server: ws.connectToServer() };
  });
  await ann.goto(`/r/${room}?name=${unique("ann")}`);
  await expect(ann.locator(".status")).toHaveAttribute("data-state", "open");
  const bob = await open(browser, `/r/${room}`, unique("bob"));

  await send(bob, "m1");
  await send(ann, "m2");
  await expect.poll(() => delivered(ann)).toEqual(["m1", "m2"]);

  // Cut ann's link and keep her out while bob goes on talking.
  blocked = true;
  live!.server.close();
  live!.page.close({ code: 4000, reason: "cut by the test" });
  await expect(ann.locator(".status")).toHaveAttribute("data-state", "reconnecting");
  await send(bob, "m3");
  await send(bob, "m4");
  await expect.poll(() => delivered(bob)).toEqual(["m1", "m2", "m3", "m4"]);
  await expect.poll(() => delivered(ann)).toEqual(["m1", "m2"]);

  // Let her back: the missed messages arrive once, in order, and the conversation goes on.
  blocked = false;
  await expect(ann.locator(".status")).toHaveAttribute("data-state", "open", { timeout: 20_000 });
  await expect.poll(() => delivered(ann)).toEqual(["m1", "m2", "m3", "m4"]);
  await send(ann, "m5");
  for (const page of [ann, bob]) {
    await expect.poll(() => delivered(page)).toEqual(["m1", "m2", "m3", "m4", "m5"]);
  }
});

test("two tabs of one person share a name and count once", async ({ browser }) => {
  const room = unique("tabs");
  const name = unique("twotabs");
  const context = await browser.newContext();
  const tab1 = await context.newPage();
  await tab1.goto(`/r/${room}?name=${name}`);
  await expect(tab1.getByTestId("my-name")).toHaveText(name);
  // The second tab asks for no name: the session cookie brings the same one.
  const tab2 = await context.newPage();
  await tab2.goto(`/r/${room}`);
  await expect(tab2.getByTestId("my-name")).toHaveText(name);

  const other = await open(browser, `/r/${room}`, unique("other"));
  await expect(other.locator(".online li")).toHaveCount(2);
  await expect(other.locator(".online li", { hasText: name })).toHaveCount(1);

  // One tab closes: still online. The last one closes: gone.
  await tab1.close();
  await send(tab2, "still here");
  await expect(other.locator(".messages .text", { hasText: "still here" })).toHaveCount(1);
  await expect(other.locator(".online li", { hasText: name })).toHaveCount(1);
  await expect(other.locator(".notice.leave", { hasText: name })).toHaveCount(0);
  await tab2.close();
  await expect(other.locator(".notice.leave", { hasText: name })).toHaveCount(1);
  await expect(other.locator(".online li", { hasText: name })).toHaveCount(0);
});

test("older messages page in at the top", async ({ browser }) => {
  // 56 sends through the rate limit take a while on a busy machine.
  test.setTimeout(60_000);
  const room = unique("paging");
  const writer = await open(browser, `/r/${room}`, unique("writer"));
  await expect(writer.locator(".online li")).toHaveCount(1);
  // 56 messages: more than the 50 a page opens with, sent faster than the rate limit allows (10 a
  // second, bursts of 20): the refused ones stay pending and the page sends them again, so all arrive,
  // in the order they were written.
  for (let i = 1; i <= 56; i++) {
    await send(writer, `message ${i}`);
  }
  await expect(writer.locator(".messages .message:not(.pending)")).toHaveCount(56, { timeout: 20_000 });
  await expect(writer.locator(".messages .pending")).toHaveCount(0);
  const expected = Array.from({ length: 56 }, (_, i) => `message ${i + 1}`);
  expect(await delivered(writer)).toEqual(expected);

  const reader = await open(browser, `/r/${room}`, unique("reader"));
  await expect(reader.locator(".messages .message")).toHaveCount(50);
  await expect(reader.locator(".messages .message .text").first()).toHaveText("message 7");
  // A click event, not a pointer click: Playwright's click scrolls the button into view first, and
  // reaching the top of the list loads older messages by itself, so the button could go before the
  // click lands.
  await reader.getByRole("button", { name: "Load older messages" }).dispatchEvent("click");
  await expect(reader.locator(".messages .message")).toHaveCount(56);
  await expect(reader.locator(".messages .message .text").first()).toHaveText("message 1");
  // All there: nothing older to load.
  await expect(reader.getByRole("button", { name: "Load older messages" })).toHaveCount(0);
});

test("the room list's counts follow people in and out without polling", async ({ browser }) => {
  const room = unique("counted");
  const ann = await open(browser, "/", unique("ann"));
  const listReads: string[] = [];
  ann.on("request", (request) => {
    if (request.url().includes("/api/rooms")) listReads.push(request.url());
  });
  // Bob opens a room ann has never seen: it shows on her list, counting him.
  const bob = await open(browser, `/r/${room}`, unique("bob"));
  const bobsRoom = ann.locator(`nav.rooms li[data-room="${room}"] .count`);
  await expect(bobsRoom).toHaveText("1");
  // Cy joins him: ann's count follows, pushed over her socket.
  const cy = await open(browser, `/r/${room}`, unique("cy"));
  await expect(bobsRoom).toHaveText("2");
  // Both leave: the count falls to 0.
  await bob.close();
  await cy.close();
  await expect(bobsRoom).toHaveText("0");
  // The list was read again once, for the room it did not show, and not on a timer since: a quiet
  // page makes no requests at all.
  const readsSoFar = listReads.length;
  expect(readsSoFar).toBeLessThanOrEqual(2);
  await ann.waitForTimeout(6000);
  expect(listReads.length).toBe(readsSoFar);
  // Nor do messages make it read the list (with many people in a room, every message would make every
  // page ask).
  for (const text of ["one", "two", "three"]) await send(ann, text);
  await expect.poll(async () => (await delivered(ann)).includes("three")).toBe(true);
  await ann.waitForTimeout(1000);
  expect(listReads.length).toBe(readsSoFar);
});
