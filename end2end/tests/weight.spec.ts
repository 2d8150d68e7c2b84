import { test, expect, CDPSession } from "@playwright/test";
import { unique } from "./support";

// The page's weight on the wire: what a first visit costs, counted by the browser itself (Chromium's
// DevTools protocol: `encodedDataLength` is every byte received for a request, headers included, so
// compressed bodies count compressed).
const KiB = 1024;
// A little above the measured figures, so any regression fails. The targets are 250 KiB for the wasm
// and 300 KiB for everything (issue 11); the page's conversation controls had taken the wasm to about
// 285 KiB and the first load to about 302 KiB, over both, until the page dropped leptos_router and
// AnyView (about 220 KiB and 235 KiB now): see README, "Page weight", for what each part costs and
// what was tried.
const WASM_BUDGET = 223 * KiB;
const FIRST_LOAD_BUDGET = 240 * KiB;

interface Load {
  url: string;
  type: string;
  status: number;
  encoding: string;
  acceptEncoding: string;
  bytes?: number;
}

/** Records every HTTP load of the page from here on (WebSockets are not loads: they are left out). */
function recordLoads(cdp: CDPSession): { loads: () => Load[]; unfinished: () => string[] } {
  const loads = new Map<string, Load>();
  // The headers the browser actually sent (it adds `Accept-Encoding` below the page's own request),
  // reported apart from the request and in no fixed order with it.
  const accepted = new Map<string, string>();
  cdp.on("Network.requestWillBeSent", (event) => {
    loads.set(event.requestId, {
      url: event.request.url,
      type: event.type ?? "",
      status: 0,
      encoding: "",
      acceptEncoding: header(event.request.headers, "accept-encoding"),
    });
  });
  cdp.on("Network.requestWillBeSentExtraInfo", (event) => {
    accepted.set(event.requestId, header(event.headers, "accept-encoding"));
  });
  cdp.on("Network.responseReceived", (event) => {
    const load = loads.get(event.requestId);
    if (load) {
      load.status = event.response.status;
      load.encoding = header(event.response.headers, "content-encoding");
    }
  });
  cdp.on("Network.loadingFinished", (event) => {
    const load = loads.get(event.requestId);
    if (load) {
      load.bytes = event.encodedDataLength;
    }
  });
  cdp.on("Network.loadingFailed", (event) => {
    const load = loads.get(event.requestId);
    if (load) load.bytes = -1;
  });
  const all = () =>
    [...loads.entries()].map(([id, load]) => ({ ...load, acceptEncoding: accepted.get(id) ?? load.acceptEncoding }));
  const unfinished = () => all().filter((l) => l.bytes === undefined).map((l) => l.url);
  return { loads: all, unfinished };
}

function header(headers: Record<string, unknown>, name: string): string {
  const found = Object.entries(headers).find(([key]) => key.toLowerCase() === name);
  return found ? String(found[1]) : "";
}

test("a first visit fits the budget: the wasm ≤ 223 KiB, everything ≤ 240 KiB, compressed", async ({ browser }) => {
  const context = await browser.newContext();
  const page = await context.newPage();
  const cdp = await context.newCDPSession(page);
  await cdp.send("Network.enable");
  await cdp.send("Network.setCacheDisabled", { cacheDisabled: true });
  const { loads, unfinished } = recordLoads(cdp);

  await page.goto(`/?name=${unique("weight")}`);
  // Hydrated and connected: the wasm has been fetched, compiled and run.
  await expect(page.locator(".status")).toHaveAttribute("data-state", "open");
  await expect.poll(unfinished).toEqual([]);

  const all = loads();
  const lines = all.map((l) => `${String(l.bytes).padStart(8)}  ${l.encoding || "identity"}\t${l.type}\t${l.url}`);
  const total = all.reduce((sum, l) => sum + (l.bytes ?? 0), 0);
  console.log(`first load, bytes on the wire:\n${lines.join("\n")}\n${String(total).padStart(8)}  total`);

  expect(all.every((l) => l.status === 200), lines.join("\n")).toBe(true);
  const ending = (suffix: string) => all.filter((l) => new URL(l.url).pathname.endsWith(suffix));
  // HTML, JS, WASM, CSS (and the icon, and the page's first API calls): all of the first load.
  expect(all[0].type).toBe("Document");
  expect(ending(".js"), "one script").toHaveLength(1);
  expect(ending(".css"), "one stylesheet").toHaveLength(1);
  const wasm = ending(".wasm");
  expect(wasm, "one wasm").toHaveLength(1);

  // The browser asked for brotli (or at least gzip), and got it: for the page and for the wasm.
  const wanted = wasm[0].acceptEncoding.includes("br") ? "br" : "gzip";
  expect(wasm[0].acceptEncoding).toMatch(/\b(br|gzip)\b/);
  expect(wasm[0].encoding, "the wasm's Content-Encoding").toBe(wanted);
  expect(all[0].encoding, "the page's Content-Encoding").toBe(wanted);

  const hint = "(was the site built with `cargo leptos build --release --precompress`?)";
  expect(wasm[0].bytes!, `the wasm on the wire ${hint}`).toBeLessThanOrEqual(WASM_BUDGET);
  expect(total, `the first load on the wire ${hint}`).toBeLessThanOrEqual(FIRST_LOAD_BUDGET);
  await context.close();
});

test("the wasm is gzip for a client without brotli, and plain for one asking for neither", async ({ request }) => {
  const gzip = await request.get("/pkg/groupchat.wasm", { headers: { "accept-encoding": "gzip" } });
  expect(gzip.status()).toBe(200);
  expect(gzip.headers()["content-encoding"]).toBe("gzip");
  expect(gzip.headers()["content-type"]).toBe("application/wasm");

  const plain = await request.get("/pkg/groupchat.wasm", { headers: { "accept-encoding": "identity" } });
  expect(plain.status()).toBe(200);
  expect(plain.headers()["content-encoding"]).toBeUndefined();
  // The same wasm either way (Playwright decodes the gzip one).
  expect((await gzip.body()).equals(await plain.body())).toBe(true);
});
