import { test, expect, Page } from "@playwright/test";
import { open, unique } from "./support";

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
