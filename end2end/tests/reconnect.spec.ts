import { test, expect } from "@playwright/test";
import { spawn, ChildProcess } from "child_process";
import * as path from "path";

// This test stops and restarts a server, so it runs its own, apart from the suite's shared one.
const root = path.resolve(__dirname, "../..");
const port = Number(process.env.E2E_RESTART_PORT ?? 3101);
const base = `http://127.0.0.1:${port}`;

function startServer(): ChildProcess {
  return spawn(path.join(root, "target/release/groupchat"), [], {
    cwd: root,
    env: {
      ...process.env,
      LEPTOS_SITE_ROOT: path.join(root, "target/site"),
      LEPTOS_SITE_ADDR: `127.0.0.1:${port}`,
      LEPTOS_OUTPUT_NAME: "groupchat",
    },
    stdio: "ignore",
  });
}

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

test("the page shows a dropped link and reconnects by itself", async ({ page }) => {
  let server = startServer();
  try {
    await waitUntilServing();
    await page.goto(`${base}/?name=phoenix`);
    const status = page.locator(".status");
    await expect(status).toHaveAttribute("data-state", "open");

    await stopServer(server);
    await expect(status).toHaveAttribute("data-state", "reconnecting");
    await expect(status).toContainText("reconnecting");
    await expect(page.getByRole("button", { name: "Send" })).toBeDisabled();

    server = startServer();
    await waitUntilServing();
    await expect(status).toHaveAttribute("data-state", "open", { timeout: 20_000 });
    await page.getByLabel("Message").fill("back again");
    await page.getByLabel("Message").press("Enter");
    await expect(
      page.locator(".messages .message", { hasText: "back again" }),
    ).toHaveCount(1);
  } finally {
    server.kill("SIGKILL");
  }
});
