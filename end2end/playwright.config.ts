import { defineConfig } from "@playwright/test";
import { ADMIN_TOKEN } from "./tests/support";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";

// The suite starts the release server itself (built by `cargo leptos build --release --precompress`, which
// `make test` runs first) on its own port, so it never meets a `make run` instance on 3000.
const port = Number(process.env.E2E_PORT ?? 3100);
const root = path.resolve(__dirname, "..");
// A fresh, empty data directory (history and session key) for every run of the suite.
const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "groupchat-e2e-"));

export default defineConfig({
  testDir: "./tests",
  timeout: 30_000,
  expect: { timeout: 10_000 },
  fullyParallel: false,
  forbidOnly: !!process.env.CI,
  retries: 0,
  workers: 1,
  reporter: [["list"]],
  use: {
    baseURL: `http://127.0.0.1:${port}`,
    trace: "retain-on-failure",
    launchOptions: {
      // Debian's chromium: Playwright's own browser download cannot be reached here.
      executablePath: process.env.CHROMIUM_PATH ?? "/usr/bin/chromium",
      args: [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
      ],
    },
  },
  webServer: {
    command: path.join(root, "target/release/groupchat"),
    cwd: root,
    env: {
      LEPTOS_SITE_ROOT: path.join(root, "target/site"),
      LEPTOS_SITE_ADDR: `127.0.0.1:${port}`,
      LEPTOS_OUTPUT_NAME: "groupchat",
      DATA_DIR: dataDir,
      RUST_LOG: "info",
      // The operator's admin API, for the moderation test (conversation.spec.ts).
      CHAT_ADMIN_TOKEN: ADMIN_TOKEN,
    },
    url: `http://127.0.0.1:${port}/`,
    reuseExistingServer: false,
    timeout: 30_000,
    stdout: "pipe",
    stderr: "pipe",
  },
});
