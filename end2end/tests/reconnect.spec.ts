import { test, expect } from "@playwright/test";
import { ChildProcess } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { delivered, send, startServer as startServerOn } from "./support";

// This test stops and restarts a server, so it runs its own, apart from the suite's shared one.
const port = Number(process.env.E2E_RESTART_PORT ?? 3101);
const base = `http://127.0.0.1:${port}`;
// Kept across the restart: the history must outlive the process.
const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "groupchat-e2e-restart-"));

async function waitUntilServing() {
  for (let i = 0; i < 100; i++) {
    try {
      if ((await fetch(`${base}/healthz`)).ok) return;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error("the server did not start");
}

async function stopServer(server: ChildProcess) {
  const exited = new Promise((r) => server.once("exit", r));
  server.kill("SIGTERM");
  await exited;
}

test("a server restart mid-conversation loses and doubles nothing", async ({ browser }) => {
  let server = startServerOn(port, dataDir);
  try {
    await waitUntilServing();
    const phoenix = await (await browser.newContext()).newPage();
    const watcher = await (await browser.newContext()).newPage();
    await phoenix.goto(`${base}/r/restart?name=phoenix`);
    await watcher.goto(`${base}/r/restart?name=watcher`);
    for (const page of [phoenix, watcher]) {
      await expect(page.locator(".status")).toHaveAttribute("data-state", "open");
    }
    await send(phoenix, "one");
    await send(watcher, "two");
    for (const page of [phoenix, watcher]) {
      await expect.poll(() => delivered(page)).toEqual(["one", "two"]);
    }

    await stopServer(server);
    const status = phoenix.locator(".status");
    await expect(status).toHaveAttribute("data-state", "reconnecting");
    await expect(status).toContainText("reconnecting");
    // The indicator counts down to the next attempt (the backoff grows while the server stays down).
    await expect(status).toContainText(/reconnecting in \d+ s…/, { timeout: 15_000 });
    // Written while the server is down: kept, shown as sending, and sent once the link is back.
    await send(phoenix, "three");
    await expect(phoenix.locator(".messages .pending", { hasText: "three" })).toContainText("sending");

    server = startServerOn(port, dataDir);
    await waitUntilServing();
    for (const page of [phoenix, watcher]) {
      await expect(page.locator(".status")).toHaveAttribute("data-state", "open", { timeout: 20_000 });
    }
    await send(watcher, "four");
    for (const page of [phoenix, watcher]) {
      await expect.poll(() => delivered(page)).toEqual(["one", "two", "three", "four"]);
      await expect(page.locator(".messages .pending")).toHaveCount(0);
    }
    // A reload renders the same history from the store.
    await watcher.reload();
    await expect.poll(() => delivered(watcher)).toEqual(["one", "two", "three", "four"]);
    // The session cookie kept the name across the restart and the reload.
    await expect(watcher.getByTestId("my-name")).toHaveText("watcher");
  } finally {
    server.kill("SIGKILL");
  }
});
