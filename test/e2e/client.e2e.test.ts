/**
 * persist-session/client in a real browser (Debian's Chromium through playwright-core),
 * against test/e2e/client-app.ts: issue #21's acceptance, one test per point, and the
 * fallbacks without Web Locks and without BroadcastChannel.
 *
 * Timing bounds are the issue's (1 s for a change to reach every tab, 2 s for a
 * takeover). Waits poll up to a generous bound and then assert the measured time.
 */
import { existsSync } from "node:fs";
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";
import { build } from "esbuild";
import { chromium, type Browser, type BrowserContext, type Page } from "playwright-core";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { APP_KEY, ClientApp, NOTES_KEY, type Made } from "./client-app.js";

const CHROMIUM = process.env.CHROMIUM_PATH || "/usr/bin/chromium";
/** Issue #21: a change in any tab reaches all the others within 1 s. */
const REACH_MS = 1000;
/** Issue #21: when the holder's tab closes, another takes over within 2 s. */
const TAKEOVER_MS = 2000;
/** Issue #21: min+gz size of the module. */
const SIZE_LIMIT_BYTES = 3 * 1024;
/** How long a poll may go on before it gives up; the bounds above are asserted on what was measured. */
const POLL_MS = 10_000;

type Change = { key: string; version: number; at: number };
type SyncStatus = "connecting" | "live" | "offline";
/** What client-app's page keeps in its window. */
type PageWindow = {
  sync: { status: SyncStatus; holdsStream: boolean; close(): void };
  changes: Change[];
  heldAt?: number;
  post(path: string): Promise<Made>;
};

const hasChromium = existsSync(CHROMIUM);
const mustRun = process.env.CI === "true";

/** Polls `read` until `done` holds, for up to `ms`; returns the last value read. */
async function until<T>(read: () => Promise<T> | T, done: (value: T) => boolean, ms = POLL_MS, what = "the condition"): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await read();
    if (done(value)) return value;
    if (Date.now() > deadline) throw new Error(`${what} did not hold within ${ms} ms; last: ${JSON.stringify(value)}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

const changesOf = (page: Page) => page.evaluate(() => (window as unknown as PageWindow).changes);
const statusOf = (page: Page) => page.evaluate(() => (window as unknown as PageWindow).sync.status);
const holds = (page: Page) => page.evaluate(() => (window as unknown as PageWindow).sync.holdsStream);
const post = (page: Page, path: string) => page.evaluate((to) => (window as unknown as PageWindow).post(to), path);

/**
 * Waits until every page in `pages` was told `key` is at `version` (at or after `since`,
 * a Date.now() of this machine: the time the change was made, from the server); resolves
 * with the slowest page's time from `since`.
 */
async function reachesAll(pages: Page[], key: string, version: number, since: number): Promise<number> {
  const times = await Promise.all(
    pages.map(async (page, index) => {
      const heard = await until(
        async () => (await changesOf(page)).find((change) => change.key === key && change.version === version && change.at >= since),
        (change) => change !== undefined,
        POLL_MS,
        `tab ${index} hearing ${key} at version ${version}`,
      );
      return heard!.at - since;
    }),
  );
  return Math.max(...times);
}

/** When one of `tabs` started holding an open stream after `closedAt` (the page records it as window.heldAt). */
async function newHolderAt(tabs: Page[], closedAt: number): Promise<number> {
  const times = await until(
    () => Promise.all(tabs.map((tab) => tab.evaluate(() => (window as unknown as PageWindow).heldAt ?? 0))),
    (heldAt) => heldAt.some((time) => time > closedAt),
    POLL_MS,
    "another tab holding the stream",
  );
  return Math.max(...times);
}

describe("persist-session/client, the module", () => {
  it("is a dependency-free browser module under 3 KB minified and gzipped, which the server never imports", async () => {
    const file = fileURLToPath(import.meta.resolve("persist-session/client"));
    expect(file).toMatch(/\/dist\/client\.js$/);
    expect(existsSync(file.replace(/\.js$/, ".d.ts"))).toBe(true);
    // Importing it runs nothing (Node has no window): it only defines its one export.
    expect(Object.keys(await import("persist-session/client"))).toEqual(["watchState"]);
    const source = await readFile(file, "utf8");
    expect(source).not.toMatch(/^\s*(import|export\s.*\sfrom)\s/m); // no imports at all: nothing to bundle, nothing from node:
    const { outputFiles } = await build({ entryPoints: [file], bundle: true, minify: true, format: "esm", target: "es2022", write: false, logLevel: "silent" });
    const minified = outputFiles[0]!.contents;
    const gzipped = gzipSync(minified, { level: 9 }).length;
    console.log(`persist-session/client: ${source.length} bytes built, ${minified.length} bytes minified, ${gzipped} bytes minified+gzipped (limit ${SIZE_LIMIT_BYTES})`);
    expect(gzipped).toBeLessThan(SIZE_LIMIT_BYTES);
    expect(new TextDecoder().decode(minified)).not.toContain("node:");

    // The server code stays out of the browser, and the browser code out of the server.
    const src = fileURLToPath(new URL("../../src/", import.meta.url));
    for (const name of (await readdir(src, { recursive: true })).filter((each) => each.endsWith(".ts") && each !== "client.ts")) {
      expect(await readFile(path.join(src, name), "utf8"), name).not.toMatch(/from\s+["'][./]+client\.js["']/);
    }
  });
});

describe.skipIf(!hasChromium && !mustRun)("persist-session/client in Chromium", () => {
  let browser: Browser;
  let app: ClientApp;
  let dir: string;
  const contexts: BrowserContext[] = [];
  const pageProblems: string[] = [];

  async function newContext(initScript?: () => void): Promise<BrowserContext> {
    const context = await browser.newContext();
    context.setDefaultTimeout(POLL_MS);
    if (initScript !== undefined) await context.addInitScript(initScript);
    context.on("page", (page) => {
      page.on("pageerror", (error) => pageProblems.push(`pageerror: ${error.message}`));
      page.on("console", (message) => {
        // The restart test cuts the events stream on purpose, and reconnecting fails while the server is down.
        const cut = /^Failed to load resource: net::ERR_[A-Z_]+$/.test(message.text()) && message.location().url.endsWith("/events");
        if (message.type() === "error" && !cut) pageProblems.push(`console: ${message.text()} (${message.location().url})`);
      });
    });
    contexts.push(context);
    return context;
  }

  /** Opens `count` tabs of the app, one after the other. */
  async function openTabs(context: BrowserContext, count: number): Promise<Page[]> {
    const pages: Page[] = [];
    for (let i = 0; i < count; i++) {
      const page = await context.newPage();
      await page.goto(`${app.url}/`);
      await page.waitForFunction(() => (window as unknown as Partial<PageWindow>).sync !== undefined);
      pages.push(page);
    }
    return pages;
  }

  async function allLive(pages: Page[]): Promise<void> {
    await until(() => Promise.all(pages.map(statusOf)), (statuses) => statuses.every((status) => status === "live"), POLL_MS, "every tab live");
  }

  /** Exactly `count` streams open, and still so a moment later (an election settled, not passing through). */
  async function settledStreams(count: number): Promise<void> {
    await until(() => app.openStreams, (open) => open === count, POLL_MS, `${count} open streams`);
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(app.openStreams).toBe(count);
  }

  beforeAll(async () => {
    if (!hasChromium) throw new Error(`CI=true but ${CHROMIUM} is missing. Install it with \`apt-get install -y chromium\`.`);
    dir = await mkdtemp(path.join(os.tmpdir(), "persist-session-client-"));
    [browser, app] = await Promise.all([
      chromium.launch({
        executablePath: CHROMIUM,
        args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--no-first-run", "--disable-sync"],
      }),
      ClientApp.start(dir),
    ]);
  });

  // A test that failed half-way must not leave its tabs' streams open for the next one to count.
  afterEach(async () => {
    await Promise.all(contexts.splice(0).map((context) => context.close()));
    app.holdStreams = 0;
    if (!app.running) await app.listen();
  });

  afterAll(async () => {
    await browser?.close();
    await app?.stop();
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  });

  it("holds one events stream for 10 tabs of a browser, and a change in any tab reaches all the others within 1 s", async () => {
    const context = await newContext();
    const tabs = await openTabs(context, 10);
    await allLive(tabs);
    await settledStreams(1);
    expect((await Promise.all(tabs.map(holds))).filter(Boolean)).toHaveLength(1);

    // The first change creates the record (and its cookie) that the stream must then follow; the others are plain changes.
    const times: string[] = [];
    for (const from of [0, 4, 9, 2]) {
      const { count, at } = await post(tabs[from]!, "/inc");
      const slowest = await reachesAll(tabs.filter((_, index) => index !== from), APP_KEY, count, at);
      times.push(`tab ${from} → ${slowest} ms`);
      expect(slowest, `version ${count} from tab ${from}`).toBeLessThanOrEqual(REACH_MS);
    }
    console.log(`10 tabs, one stream: slowest of the other 9 tabs per change (the first creates the record): ${times.join(", ")}`);
    expect(app.openStreams).toBe(1);
    // Each tab heard each version once.
    for (const tab of tabs) expect((await changesOf(tab)).map((change) => change.version)).toEqual([1, 2, 3, 4]);
  }, 90_000); // opening Chromium tabs is the slow part on two busy cores; the bounds that matter are inside

  it("hands the stream to another tab within 2 s when the holder's tab closes, and a change made during the handover reaches every tab", async () => {
    const context = await newContext();
    const tabs = await openTabs(context, 4);
    await post(tabs[0]!, "/inc");
    await reachesAll(tabs, APP_KEY, 1, 0);
    await allLive(tabs);
    await settledStreams(1);

    const handOver = async (during?: () => Promise<void>) => {
      const flags = await Promise.all(tabs.map(holds));
      const holder = tabs[flags.indexOf(true)]!;
      tabs.splice(tabs.indexOf(holder), 1);
      const closedAt = Date.now();
      await holder.close();
      await during?.();
      const heldAt = await newHolderAt(tabs, closedAt);
      await settledStreams(1);
      expect((await Promise.all(tabs.map(holds))).filter(Boolean)).toHaveLength(1);
      return heldAt - closedAt;
    };

    const takeover = await handOver();
    console.log(`holder closed: another tab held the stream, open, ${takeover} ms later`);
    expect(takeover).toBeLessThanOrEqual(TAKEOVER_MS);

    // Again, with the new holder's stream held back at the server so that the change lands while no stream is
    // open. It is made with the browser's cookies but by no tab (as another device changes a user's state), so
    // no tab's request prompts a check: only the new holder's stream, resumed from the last event id, can bring it.
    app.holdStreams = 300;
    let made: Made | undefined;
    const since = Date.now();
    const slowTakeover = await handOver(async () => {
      await until(() => app.openStreams, (open) => open === 0, POLL_MS, "the old stream closed");
      made = (await (await context.request.post(`${app.url}/inc`)).json()) as Made;
    });
    app.holdStreams = 0;
    expect(made).toMatchObject({ count: 2, openStreams: 0 });
    const reached = await reachesAll(tabs, APP_KEY, 2, since);
    console.log(`change made with no stream open (new holder's stream held back 300 ms): every tab heard it ${reached} ms after the old holder closed; takeover ${slowTakeover} ms`);
    expect(slowTakeover).toBeLessThanOrEqual(TAKEOVER_MS);
    for (const tab of tabs) expect((await changesOf(tab)).map((change) => change.version)).toEqual([1, 2]);
  }, 90_000); // opening Chromium tabs is the slow part on two busy cores; the bounds that matter are inside

  it("follows a first change, a reset, a sign-in and a sign-out made in one tab, in a tab opened before any cookie existed", async () => {
    const phone = await newContext(); // alice's other device
    const [alicePhone] = await openTabs(phone, 1);
    await post(alicePhone!, "/login");
    const { count: notes } = await post(alicePhone!, "/notes");

    const context = await newContext();
    const [tabA, tabB] = await openTabs(context, 2);
    expect(await context.cookies()).toEqual([]);
    await allLive([tabA!, tabB!]);
    const news = async (since: number) => (await changesOf(tabB!)).filter((change) => change.at >= since).map(({ key, version }) => ({ key, version }));
    const step = async (what: string, act: () => Promise<unknown>, expected: Array<{ key: string; version: number }>) => {
      const since = Date.now();
      await act();
      await until(() => news(since), (heard) => heard.length >= expected.length, POLL_MS, `tab B hearing ${what}`);
      expect(await news(since), what).toEqual(expected);
      console.log(`tab B followed ${what} in ${Math.max(...(await changesOf(tabB!)).map((change) => change.at)) - since} ms`);
    };

    await step("tab A's first change", () => post(tabA!, "/inc"), [{ key: APP_KEY, version: 1 }]);
    // The reset deletes the record (version 0); tab A's next change makes a new one, which tab B follows.
    await step("its own reset", () => post(tabB!, "/reset"), [{ key: APP_KEY, version: 0 }]);
    await step("tab A's change after the reset", () => post(tabA!, "/inc"), [{ key: APP_KEY, version: 1 }]);
    // Signing in (tab A) makes this browser follow alice's notes, and a change on her phone reaches tab B.
    await step("tab A's sign-in", () => post(tabA!, "/login"), [{ key: NOTES_KEY, version: notes }]);
    await step("a change on alice's phone", () => post(alicePhone!, "/notes"), [{ key: NOTES_KEY, version: notes + 1 }]);
    // Signing out (tab B): alice's notes are no longer this browser's, and her phone's changes stop reaching it.
    await step("its own sign-out", () => post(tabB!, "/logout"), [{ key: NOTES_KEY, version: 0 }]);
    await step("tab A's change after the sign-out", async () => {
      await post(alicePhone!, "/notes"); // published before tab A's change: it would come first if the stream still followed alice
      await post(tabA!, "/inc");
    }, [{ key: APP_KEY, version: 2 }]);
    expect(app.streams.at(-1)).toBeUndefined(); // the browser's stream now is a signed-out one
    expect((await changesOf(tabA!)).map(({ key, version }) => ({ key, version }))).toEqual(
      (await changesOf(tabB!)).map(({ key, version }) => ({ key, version })),
    );
  }, 90_000); // opening Chromium tabs is the slow part on two busy cores; the bounds that matter are inside

  it("reconnects every tab after a server restart, and every tab gets the next change", async () => {
    const context = await newContext();
    const tabs = await openTabs(context, 3);
    const { count: first } = await post(tabs[0]!, "/inc");
    await reachesAll(tabs, APP_KEY, first, 0);
    await allLive(tabs);
    await settledStreams(1);

    await app.stop();
    await until(() => Promise.all(tabs.map(statusOf)), (statuses) => statuses.every((status) => status === "offline"), POLL_MS, "every tab offline");
    await new Promise((resolve) => setTimeout(resolve, 500)); // down for a moment: reconnecting fails at least once
    const restartedAt = Date.now();
    await app.listen();
    // A change at once, before the tabs are back, by no tab: the holder's resumed stream (Last-Event-ID) brings it.
    const { count: atOnce } = (await (await context.request.post(`${app.url}/inc`)).json()) as Made;
    await allLive(tabs);
    const back = Date.now() - restartedAt;
    await settledStreams(1);
    await reachesAll(tabs, APP_KEY, atOnce, restartedAt);
    const { count: next, at } = await post(tabs[2]!, "/inc");
    const reached = await reachesAll(tabs, APP_KEY, next, at);
    console.log(`server restart: every tab live again within ${back} ms of the new server listening; the next change reached every tab in ${reached} ms`);
    expect(reached).toBeLessThanOrEqual(REACH_MS);
    for (const tab of tabs) expect((await changesOf(tab)).map((change) => change.version)).toEqual([first, atOnce, next]);
  }, 90_000); // opening Chromium tabs is the slow part on two busy cores; the bounds that matter are inside

  it("elects one holder over BroadcastChannel where Web Locks are missing, settles on one after a split, and hands over when it closes", async () => {
    // No Web Locks; and while window.split holds, a tab's messages to the others are lost, so each tab
    // thinks it is alone and takes the stream: once they hear each other, they must settle on one.
    const context = await newContext(() => {
      delete (Navigator.prototype as { locks?: unknown }).locks;
      const split = window as unknown as { split: boolean };
      split.split = true;
      const Native = BroadcastChannel;
      window.BroadcastChannel = class extends Native {
        override postMessage(message: unknown): void {
          if (!split.split) super.postMessage(message);
        }
      };
    });
    const tabs = await openTabs(context, 4);
    expect(await tabs[0]!.evaluate(() => "locks" in navigator)).toBe(false);
    await until(() => app.openStreams, (open) => open === 4, POLL_MS, "each split tab holding a stream");
    const joined = Date.now();
    await Promise.all(tabs.map((tab) => tab.evaluate(() => ((window as unknown as { split: boolean }).split = false))));
    await post(tabs[0]!, "/inc");
    await allLive(tabs);
    await settledStreams(1);
    console.log(`without Web Locks: 4 split tabs held 4 streams; ${Date.now() - joined} ms after they could hear each other, one stream was left`);
    const { count, at } = await post(tabs[3]!, "/inc");
    expect(await reachesAll(tabs, APP_KEY, count, at)).toBeLessThanOrEqual(REACH_MS);

    const holder = tabs[(await Promise.all(tabs.map(holds))).indexOf(true)]!;
    tabs.splice(tabs.indexOf(holder), 1);
    const closedAt = Date.now();
    await holder.close();
    const takeover = (await newHolderAt(tabs, closedAt)) - closedAt;
    console.log(`without Web Locks: the holder closed, another tab held the stream ${takeover} ms later`);
    expect(takeover).toBeLessThanOrEqual(TAKEOVER_MS);
    await settledStreams(1);
    const { count: after } = await post(tabs[0]!, "/inc");
    await reachesAll(tabs, APP_KEY, after, closedAt);
  }, 90_000); // opening Chromium tabs is the slow part on two busy cores; the bounds that matter are inside

  it("keeps a stream per tab where BroadcastChannel is missing, and still tells each tab", async () => {
    const context = await newContext(() => void delete (window as { BroadcastChannel?: unknown }).BroadcastChannel);
    const [first] = await openTabs(context, 1);
    await post(first!, "/inc"); // a record to follow, before the other tabs open
    const tabs = [first!, ...(await openTabs(context, 2))];
    expect(await tabs[1]!.evaluate(() => typeof BroadcastChannel)).toBe("undefined");
    await allLive(tabs);
    await settledStreams(3);
    const { count, at } = await post(tabs[2]!, "/inc");
    expect(await reachesAll(tabs, APP_KEY, count, at)).toBeLessThanOrEqual(REACH_MS);
    expect((await Promise.all(tabs.map(holds))).every(Boolean)).toBe(true);
  }, 90_000); // opening Chromium tabs is the slow part on two busy cores; the bounds that matter are inside

  afterAll(() => {
    expect(pageProblems).toEqual([]);
  });
});
