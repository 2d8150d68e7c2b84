import { test, expect, Page } from "@playwright/test";
import { spawn, spawnSync, ChildProcess } from "child_process";
import * as fs from "fs";
import * as net from "net";
import * as os from "os";
import * as path from "path";
import { delivered, freePort, send, startServer } from "./support";

// Cluster mode in a real browser: a private PostgreSQL and Redis, two server nodes on them, and a
// small TCP proxy in front of node A, as a load balancer would be. Page one goes through the proxy,
// page two straight to node B. Node A is then killed: the proxy sends new connections to B, and page
// one reconnects there by itself, missing and doubling nothing.

const children: ChildProcess[] = [];
const dirs: string[] = [];

function tempDir(prefix: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  dirs.push(dir);
  return dir;
}

async function waitFor(what: string, ready: () => Promise<boolean>, seconds = 30) {
  for (let i = 0; i < seconds * 10; i++) {
    if (await ready().catch(() => false)) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${what} did not start`);
}

function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, "127.0.0.1");
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}

/** PostgreSQL's binaries: Debian keeps them in /usr/lib/postgresql/<version>/bin. */
function pgBin(): string {
  const base = "/usr/lib/postgresql";
  const versions = fs.existsSync(base) ? fs.readdirSync(base).sort((a, b) => Number(b) - Number(a)) : [];
  for (const v of versions) {
    const bin = path.join(base, v, "bin");
    if (fs.existsSync(path.join(bin, "initdb"))) return bin;
  }
  throw new Error("no PostgreSQL binaries (make test installs Debian's postgresql)");
}

/** A private PostgreSQL on a free port, run as the postgres user (it refuses root); its URL. */
async function startPostgres(): Promise<string> {
  const dir = tempDir("groupchat-e2e-pg-");
  const asPostgres = process.getuid?.() === 0;
  if (asPostgres) spawnSync("chown", ["postgres:postgres", dir]);
  const run = (cmd: string, args: string[]) =>
    asPostgres ? ["runuser", ["-u", "postgres", "--", cmd, ...args]] : [cmd, args];
  const bin = pgBin();
  const data = path.join(dir, "data");
  const [initCmd, initArgs] = run(path.join(bin, "initdb"), [
    "-D", data, "--username=postgres", "--auth=trust", "--locale=C", "--no-sync",
  ]) as [string, string[]];
  const init = spawnSync(initCmd, initArgs, { stdio: "pipe" });
  if (init.status !== 0) throw new Error(`initdb failed: ${init.stderr}`);
  const port = await freePort();
  const [pgCmd, pgArgs] = run(path.join(bin, "postgres"), [
    "-D", data, "-p", String(port), "-k", dir, "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
  ]) as [string, string[]];
  children.push(spawn(pgCmd, pgArgs, { stdio: "ignore" }));
  await waitFor("PostgreSQL", () => accepts(port));
  // Accepting connections is not yet accepting queries: retry until a database can be made.
  await waitFor("PostgreSQL", async () => {
    const made = spawnSync(path.join(bin, "createdb"), ["-h", "127.0.0.1", "-p", String(port), "-U", "postgres", "chat"]);
    return made.status === 0;
  });
  return `postgres://postgres@127.0.0.1:${port}/chat`;
}

async function startRedis(): Promise<string> {
  const port = await freePort();
  children.push(
    spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], {
      cwd: tempDir("groupchat-e2e-redis-"),
      stdio: "ignore",
    }),
  );
  await waitFor("Redis", () => accepts(port));
  return `redis://127.0.0.1:${port}/`;
}

async function startNode(id: string, env: Record<string, string>): Promise<{ port: number; child: ChildProcess }> {
  const port = await freePort();
  const child = startServer(port, tempDir(`groupchat-e2e-node-${id}-`), { ...env, CHAT_NODE_ID: id });
  children.push(child);
  await waitFor(`node ${id}`, async () => {
    const health = await (await fetch(`http://127.0.0.1:${port}/healthz`)).json();
    return health.status === "ok";
  });
  return { port, child };
}

/** A TCP proxy on `port` to whichever backend `target()` names when a connection arrives. */
function proxy(port: number, target: () => number): net.Server {
  const server = net.createServer((client) => {
    const upstream = net.connect(target(), "127.0.0.1");
    client.pipe(upstream).pipe(client);
    const close = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on("error", close);
    upstream.on("error", close);
    client.on("close", close);
    upstream.on("close", close);
  });
  server.listen(port, "127.0.0.1");
  return server;
}

test.afterAll(async () => {
  for (const child of children) child.kill("SIGKILL");
  for (const dir of dirs) fs.rmSync(dir, { recursive: true, force: true });
});

test("two pages on two nodes chat both ways, and one survives its node's death", async ({ browser }) => {
  test.setTimeout(120_000);
  const proxyPort = await freePort();
  // The nodes answer to the proxy's address too: it is how page one reaches them.
  const shared = {
    DATABASE_URL: await startPostgres(),
    REDIS_URL: await startRedis(),
    CHAT_ALLOWED_HOSTS: `127.0.0.1:${proxyPort}`,
  };
  const a = await startNode("a", shared);
  const b = await startNode("b", shared);
  let backend = a.port;
  const front = proxy(proxyPort, () => backend);
  try {
    const one = await (await browser.newContext()).newPage();
    const two = await (await browser.newContext()).newPage();
    await one.goto(`http://127.0.0.1:${proxyPort}/r/cluster?name=uno`);
    await two.goto(`http://127.0.0.1:${b.port}/r/cluster?name=dos`);
    for (const page of [one, two]) {
      await expect(page.locator(".status")).toHaveAttribute("data-state", "open");
    }
    // Each sees the other, across nodes.
    await expect(one.locator(".online")).toContainText("dos");
    await expect(two.locator(".online")).toContainText("uno");

    await send(one, "from a");
    await send(two, "from b");
    for (const page of [one, two]) {
      await expect.poll(() => delivered(page)).toEqual(["from a", "from b"]);
    }

    // Node A dies; the balancer sends new connections to B.
    const died = new Promise((r) => a.child.once("exit", r));
    a.child.kill("SIGKILL");
    await died;
    backend = b.port;
    await send(two, "while a was down");
    await send(two, "and once more");
    await expect(one.locator(".status")).toHaveAttribute("data-state", "open", { timeout: 30_000 });
    await send(one, "back on b");
    const all = ["from a", "from b", "while a was down", "and once more", "back on b"];
    for (const page of [one, two]) {
      await expect.poll(() => delivered(page), { timeout: 15_000 }).toEqual(all);
    }
    // One person, still: page one's name came back with it through the shared session key.
    await expect(one.getByTestId("my-name")).toHaveText("uno");
  } finally {
    front.close();
  }
});

test("replies, reactions, edits, deletes, mentions and read positions made on one node show on the other", async ({ browser }) => {
  test.setTimeout(120_000);
  const shared = { DATABASE_URL: await startPostgres(), REDIS_URL: await startRedis() };
  const a = await startNode("a", shared);
  const b = await startNode("b", shared);
  const one = await (await browser.newContext()).newPage();
  const two = await (await browser.newContext()).newPage();
  await one.goto(`http://127.0.0.1:${a.port}/r/talk?name=uno`);
  await two.goto(`http://127.0.0.1:${b.port}/r/talk?name=dos`);
  for (const page of [one, two]) {
    await expect(page.locator(".status")).toHaveAttribute("data-state", "open");
  }
  await expect(one.locator(".online")).toContainText("dos");
  const line = (page: Page, text: string) =>
    page.locator(".messages li.message[data-seq]").filter({ has: page.locator(".text", { hasText: text }) });

  await send(two, "question from b");
  // A reply and a reaction from node A's page, seen on node B's.
  const question = line(one, "question from b");
  await question.hover();
  await question.getByRole("button", { name: "Reply" }).click();
  await send(one, "answer from a");
  await expect(line(two, "answer from a").locator(".quote")).toContainText("question from b");
  await question.hover();
  await question.getByRole("button", { name: "Add a reaction" }).click();
  await one.getByRole("button", { name: "React with 👍" }).click();
  await expect(line(two, "question from b").locator(".reaction")).toHaveText("👍 1");
  // B's page toggles the same reaction: one count per person, on both.
  await line(two, "question from b").locator(".reaction").click();
  await expect(question.locator(".reaction")).toHaveText("👍 2");

  // An edit and a delete from A's page.
  const answer = line(one, "answer from a");
  await answer.hover();
  await answer.getByRole("button", { name: "Edit" }).click();
  await one.getByRole("textbox", { name: "Message" }).fill("answer from a, edited");
  await one.getByRole("textbox", { name: "Message" }).press("Enter");
  await expect(line(two, "answer from a, edited").locator(".edited")).toBeVisible();
  one.once("dialog", (dialog) => dialog.accept());
  const edited = line(one, "answer from a, edited");
  await edited.hover();
  await edited.getByRole("button", { name: "Delete" }).click();
  await expect(two.locator(".messages .text.deleted")).toHaveText("message deleted");

  // A mention from B's page stands out on A's, and counts on A's room list while A is elsewhere.
  await send(two, "@uno are you there");
  await expect(line(one, "are you there")).toHaveClass(/to-me/);
  await one.getByLabel("Room name").fill("lobby");
  await one.getByLabel("Room name").press("Enter");
  await expect(one.locator("main.room")).toHaveAttribute("data-room", "lobby");
  await send(two, "@uno ping from b");
  await expect(one.locator(`.rooms li[data-room="talk"] .unread`)).toHaveText("@ 1");
});
