/**
 * The demo in a real browser: Debian's Chromium driven by playwright-core (no
 * downloaded browser). Run with `npm run test:e2e`, which builds dist/ first.
 *
 * The scenario tests share one store directory and run in order: each step
 * starts from the state the previous one left, as a person clicking through would.
 */
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readdir, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { chromium, type Browser, type BrowserContext, type Cookie, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DemoProcess, freePort, ROOT, SECRET_WARNING } from "./demo-process.js";

/** Debian's Chromium; never a downloaded browser. CHROMIUM_PATH points elsewhere (or nowhere, to try the skip). */
const CHROMIUM = process.env.CHROMIUM_PATH || "/usr/bin/chromium";
const COOKIE = "app-state";
const UUID_FILE = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
const SIGNED_VALUE = /^([0-9a-f-]{36})\.([A-Za-z0-9_-]{43})$/;
const FOURTEEN_DAYS_S = 14 * 24 * 60 * 60;
const SCREENSHOTS = path.join(ROOT, "test/e2e/screenshots");
/** Playwright waits (clicks, navigations, polls) give up after this; the whole suite stays well under a minute. */
const STEP_TIMEOUT_MS = 10_000;

const hasChromium = existsSync(CHROMIUM);
const mustRun = process.env.CI === "true";
if (!hasChromium && !mustRun) {
  console.log(`Skipping the browser suite: ${CHROMIUM} is missing. Install it with \`apt-get install -y chromium\`.`);
}

describe.skipIf(!hasChromium && !mustRun)("demo in Chromium", () => {
  let browser: Browser;
  let dir: string;
  let port: number;
  let demo: DemoProcess;
  /** Every demo process this suite started, so afterAll can make sure none is left. */
  const started: DemoProcess[] = [];
  /** Browser-side problems (uncaught exceptions, console errors such as CSP violations), per page. */
  const pageProblems: string[] = [];

  async function startDemo(): Promise<DemoProcess> {
    const next = await DemoProcess.start(port, path.join(dir, "store"));
    started.push(next);
    return next;
  }

  async function newContext(options: Parameters<Browser["newContext"]>[0] = {}): Promise<BrowserContext> {
    const context = await browser.newContext(options);
    context.setDefaultTimeout(STEP_TIMEOUT_MS);
    context.on("page", watch);
    return context;
  }

  function watch(page: Page): void {
    page.on("pageerror", (error) => pageProblems.push(`pageerror: ${error.message}`));
    page.on("console", (message) => {
      if (message.type() === "error") pageProblems.push(`console: ${message.text()}`);
    });
  }

  async function openDemo(context: BrowserContext): Promise<Page> {
    const page = await context.newPage();
    await page.goto(`${demo.url}/`);
    return page;
  }

  async function shot(page: Page, name: string, fullPage = true): Promise<void> {
    await page.screenshot({ path: path.join(SCREENSHOTS, `${name}.png`), fullPage });
  }

  /** What the page shows: the counter and the todos as "text" or "text ✓" when done. */
  async function shown(page: Page): Promise<{ count: string; todos: string[] }> {
    const count = (await page.locator("#count").textContent()) ?? "";
    const todos = await page.locator("li.todo").evaluateAll((items) =>
      items.map((item) => `${item.querySelector(".text")?.textContent ?? ""}${item.classList.contains("done") ? " ✓" : ""}`),
    );
    return { count, todos };
  }

  async function expectShown(page: Page, expected: { count: string; todos: string[] }): Promise<void> {
    await expect.poll(() => shown(page), { timeout: STEP_TIMEOUT_MS }).toEqual(expected);
  }

  async function increase(page: Page, times: number): Promise<void> {
    for (let i = 0; i < times; i++) {
      const before = Number(await page.locator("#count").textContent());
      await page.getByRole("button", { name: "Increase" }).click();
      // One click at a time: with JavaScript the page swaps in new buttons after each answer.
      await expect.poll(() => page.locator("#count").textContent(), { timeout: STEP_TIMEOUT_MS }).toBe(String(before + 1));
    }
  }

  async function addTodo(page: Page, text: string): Promise<void> {
    const before = await page.locator("li.todo").count();
    await page.getByLabel("New todo").fill(text);
    await page.getByRole("button", { name: "Add" }).click();
    await expect.poll(() => page.locator("li.todo").count(), { timeout: STEP_TIMEOUT_MS }).toBe(before + 1);
  }

  async function sessionCookie(context: BrowserContext): Promise<Cookie | undefined> {
    return (await context.cookies(demo.url)).find((cookie) => cookie.name === COOKIE);
  }

  async function recordFiles(): Promise<string[]> {
    return (await readdir(path.join(dir, "store"))).filter((name) => UUID_FILE.test(name));
  }

  function expectCleanLogs(server: DemoProcess): void {
    expect(server.unexpectedOutput()).toEqual([]);
    expect(pageProblems).toEqual([]);
  }

  beforeAll(async () => {
    if (!hasChromium) throw new Error(`CI=true but ${CHROMIUM} is missing. Install it with \`apt-get install -y chromium\`.`);
    await mkdir(SCREENSHOTS, { recursive: true });
    dir = await mkdtemp(path.join(os.tmpdir(), "persist-session-e2e-"));
    port = await freePort();
    [browser, demo] = await Promise.all([
      chromium.launch({
        executablePath: CHROMIUM,
        args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--no-first-run", "--disable-sync"],
      }),
      startDemo(),
    ]);
  });

  afterAll(async () => {
    await browser?.close();
    await Promise.all(started.map((server) => server.stop("SIGKILL")));
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  });

  describe("one browser, step by step", () => {
    let context: BrowserContext;
    let page: Page;

    beforeAll(async () => {
      context = await newContext();
      page = await openDemo(context);
    });

    afterAll(async () => {
      await context?.close();
    });

    it("keeps three clicks of + and two todos across a reload", async () => {
      await expectShown(page, { count: "0", todos: [] });
      expect(await page.locator("#nothing-stored").count()).toBe(1);
      // A marker that a full page load would wipe: the enhanced page must not navigate.
      await page.evaluate(() => ((window as unknown as { marker: string }).marker = "still here"));

      await increase(page, 3);
      await addTodo(page, "Buy milk");
      await addTodo(page, "Water the <b>plants</b> & \"ferns\"");
      expect(await page.evaluate(() => (window as unknown as { marker?: string }).marker)).toBe("still here");
      await shot(page, "01-before-reload");

      await page.reload();
      await expectShown(page, { count: "3", todos: ["Buy milk", 'Water the <b>plants</b> & "ferns"'] });
      // The user's markup is shown as text, never parsed.
      expect(await page.locator("li.todo b").count()).toBe(0);
      // The status panel names the record the cookie points at, and that record is a file in the store.
      const cookie = await sessionCookie(context);
      const id = SIGNED_VALUE.exec(cookie?.value ?? "")?.[1];
      expect(id).toBeDefined();
      await expect.poll(() => page.locator(".store code").first().textContent()).toBe(`${id!.slice(0, 8)}…`);
      expect(await recordFiles()).toEqual([id]);
      await shot(page, "01-after-reload");
      // The generated secret is announced once, not per request.
      expect(demo.stderr.split(SECRET_WARNING).length - 1).toBe(1);
      expectCleanLogs(demo);
    });

    it("shares the state with a second tab, and the first tab sees that tab's changes", async () => {
      const second = await context.newPage();
      await second.goto(`${demo.url}/`);
      await expectShown(second, { count: "3", todos: ["Buy milk", 'Water the <b>plants</b> & "ferns"'] });

      await increase(second, 1);
      await second.getByRole("button", { name: "Done: Buy milk" }).click();
      await expectShown(second, { count: "4", todos: ["Buy milk ✓", 'Water the <b>plants</b> & "ferns"'] });
      await shot(second, "02-second-tab");
      await second.close();

      await page.bringToFront();
      await page.reload();
      await expectShown(page, { count: "4", todos: ["Buy milk ✓", 'Water the <b>plants</b> & "ferns"'] });
      await shot(page, "02-first-tab-reloaded");
      expectCleanLogs(demo);
    });

    it("keeps the state when the server stops (SIGTERM, then SIGKILL) and a new one starts on the same directory", async () => {
      const expected = { count: "4", todos: ["Buy milk ✓", 'Water the <b>plants</b> & "ferns"'] };
      const graceful = demo;
      expect(await graceful.stop("SIGTERM")).toEqual({ code: 0, signal: null });
      expectCleanLogs(graceful);
      // Nothing answers now: the reload below really talks to a new process.
      await expect(fetch(`${demo.url}/`)).rejects.toThrow();

      demo = await startDemo();
      await page.reload();
      await expectShown(page, expected);
      await shot(page, "03-after-sigterm-restart");

      // A change, then a hard kill: the change was stored before its response, so it survives.
      await increase(page, 1);
      expect(await demo.stop("SIGKILL")).toEqual({ code: null, signal: "SIGKILL" });
      demo = await startDemo();
      await page.reload();
      await expectShown(page, { ...expected, count: "5" });
      await shot(page, "03-after-sigkill-restart");
      // The generated secret was reused from the store, or the cookie would have been refused above.
      expect(await recordFiles()).toHaveLength(1);
      expectCleanLogs(demo);
    });

    it("keeps the session cookie away from scripts: HttpOnly, SameSite=Lax, expiring in about 14 days", async () => {
      // document.cookie works in this page (a script-set cookie shows) but never shows ours.
      await page.evaluate(() => (document.cookie = "probe=visible; path=/"));
      const fromScript = await page.evaluate(() => document.cookie);
      expect(fromScript).toContain("probe=visible");
      expect(fromScript).not.toContain(COOKIE);

      const cookie = await sessionCookie(context);
      expect(cookie).toBeDefined();
      expect(cookie!.value).toMatch(SIGNED_VALUE);
      expect(cookie!.httpOnly).toBe(true);
      expect(cookie!.sameSite).toBe("Lax");
      expect(cookie!.path).toBe("/");
      expect(cookie!.secure).toBe(false); // plain http: Secure would make the browser drop it
      const now = Date.now() / 1000;
      expect(cookie!.expires).toBeGreaterThan(now);
      expect(Math.abs(cookie!.expires - (now + FOURTEEN_DAYS_S))).toBeLessThan(60 * 60);
      await context.clearCookies({ name: "probe" });
      await shot(page, "04-cookie");
    });

    it("clears the cookie and the record file with “Clear cookies and temporary files”", async () => {
      const before = await recordFiles();
      expect(before).toHaveLength(1);
      await page.getByRole("button", { name: "Clear cookies and temporary files" }).click();
      await expectShown(page, { count: "0", todos: [] });
      await expect.poll(() => page.locator("#nothing-stored").count()).toBe(1);
      await shot(page, "05-cleared");

      expect(await sessionCookie(context)).toBeUndefined();
      const files = await readdir(path.join(dir, "store"));
      expect(files.filter((name) => UUID_FILE.test(name) || name.startsWith(before[0]!))).toEqual([]);
      // And it stays cleared: a reload does not bring the old state back.
      await page.reload();
      await expectShown(page, { count: "0", todos: [] });
      expectCleanLogs(demo);
    });

    it("never shows one browser's state to a second, separate browser context", async () => {
      await increase(page, 1);
      await addTodo(page, "Only in the first browser");

      const other = await newContext();
      try {
        const stranger = await openDemo(other);
        await expectShown(stranger, { count: "0", todos: [] });
        expect(await sessionCookie(other)).toBeUndefined();
        await increase(stranger, 2);
        await shot(stranger, "06-second-context");
        const mine = await sessionCookie(context);
        const theirs = await sessionCookie(other);
        expect(theirs?.value).toMatch(SIGNED_VALUE);
        expect(theirs!.value.slice(0, 36)).not.toBe(mine!.value.slice(0, 36));
      } finally {
        await other.close();
      }

      await page.reload();
      await expectShown(page, { count: "1", todos: ["Only in the first browser"] });
      expect(await recordFiles()).toHaveLength(2);
      expectCleanLogs(demo);
    });

    it("gives fresh state for a tampered cookie, logs no crash, keeps serving and keeps the real record", async () => {
      const genuine = (await sessionCookie(context))!;
      const [, id, signature] = SIGNED_VALUE.exec(genuine.value)!;
      const at = 20; // in the middle: the last character's low bits have other spellings
      const flipped = signature!.slice(0, at) + (signature![at] === "A" ? "B" : "A") + signature!.slice(at + 1);
      await context.addCookies([{ ...genuine, value: `${id}.${flipped}` }]);
      expect((await sessionCookie(context))!.value).not.toBe(genuine.value);

      await page.reload();
      await expectShown(page, { count: "0", todos: [] });
      expect(await page.locator("#nothing-stored").count()).toBe(1);
      await shot(page, "07-tampered-cookie");

      expect(demo.running).toBe(true);
      expect((await fetch(`${demo.url}/`)).status).toBe(200);
      expect(demo.stderr).not.toMatch(/Error|^\s+at /m);
      expectCleanLogs(demo);
      // A forged cookie never costs the real owner their state.
      expect(await recordFiles()).toContain(id);
      await context.addCookies([genuine]);
      await page.reload();
      await expectShown(page, { count: "1", todos: ["Only in the first browser"] });
    });
  });

  it("shows a refused todo in place when JavaScript is on, without leaving the page", async () => {
    const context = await newContext();
    try {
      const page = await openDemo(context);
      // The input's maxlength stops people; the server must stop the rest.
      await page.getByLabel("New todo").evaluate((input) => input.removeAttribute("maxlength"));
      await page.getByLabel("New todo").fill("z".repeat(201));
      await page.getByRole("button", { name: "Add" }).click();
      await expect.poll(() => page.getByRole("alert").textContent()).toBe("That todo is too long. Keep it to 200 characters.");
      expect(new URL(page.url()).search).toBe("");
      // The refused text is given back to fix, not lost.
      expect(await page.getByLabel("New todo").inputValue()).toBe("z".repeat(201));
      await expectShown(page, { count: "0", todos: [] });
      await shot(page, "10-refused-with-javascript", false);
      expectCleanLogs(demo);
    } finally {
      await context.close();
    }
  });

  describe("with JavaScript disabled", () => {
    let context: BrowserContext;
    let page: Page;

    beforeAll(async () => {
      context = await newContext({ javaScriptEnabled: false });
      page = await openDemo(context);
    });

    afterAll(async () => {
      await context?.close();
    });

    it("counts and adds todos through plain form posts answered with 303 to /", async () => {
      await expectShown(page, { count: "0", todos: [] });
      const posts: Array<{ url: string; status: number | undefined }> = [];
      page.on("requestfinished", async (request) => {
        if (request.method() === "POST") posts.push({ url: new URL(request.url()).pathname, status: (await request.response())?.status() });
      });

      await increase(page, 2);
      await addTodo(page, "Works without scripts");
      await expectShown(page, { count: "2", todos: ["Works without scripts"] });
      await page.getByRole("button", { name: "Done: Works without scripts" }).click();
      await expectShown(page, { count: "2", todos: ["Works without scripts ✓"] });
      expect(new URL(page.url()).pathname).toBe("/");
      await expect.poll(() => posts.length).toBe(4);
      expect(posts).toEqual([
        { url: "/count/increment", status: 303 },
        { url: "/count/increment", status: 303 },
        { url: "/todos", status: 303 },
        { url: "/todos/toggle", status: 303 },
      ]);
      await shot(page, "08-no-javascript");
      expectCleanLogs(demo);
    });

    it("refuses a todo over 200 characters and a 101st todo, with a message on the page", async () => {
      const post = (text: string) => context.request.post(`${demo.url}/todos`, { form: { text }, maxRedirects: 0 });

      const tooLong = await post("x".repeat(201));
      expect(tooLong.status()).toBe(303);
      expect(tooLong.headers().location).toBe("/?error=too-long");
      expect((await post("y".repeat(200))).headers().location).toBe("/");

      for (let i = 3; i <= 100; i++) expect((await post(`todo ${i}`)).headers().location).toBe("/");
      expect((await post("one too many")).headers().location).toBe("/?error=too-many");

      await page.goto(`${demo.url}/?error=too-many`);
      await expect.poll(() => page.getByRole("alert").textContent()).toContain("The list is full (100 todos)");
      expect(await page.locator("li.todo").count()).toBe(100);
      expect(await page.getByLabel("New todo").isDisabled()).toBe(true);
      await shot(page, "09-limits", false);
      expectCleanLogs(demo);
    });
  });
});
