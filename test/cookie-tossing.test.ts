/**
 * Cookies a client controls cost little and open nothing (#17, points 4 and 6):
 * a name sent twice opens no record, forged values are checked only for
 * registered keys and at most maxCookies times, and `__Host-` keys get the
 * attributes browsers demand of them.
 */
import { afterEach, describe, expect, it, vi } from "vitest";
import { MemoryStore, persist, persistSession, type Sessions } from "../src/index.js";
import { CookieSigner } from "../src/cookie-signing.js";
import { Browser, listen, type TestServer } from "./helpers/http.js";

const SECRET = "tossing-secret-0123456789-abcdefghijkl";

const Wallet = persist("tossing-wallet")(
  class Wallet {
    owner = "nobody";
    coins = 0;
  },
);
const HostPrefs = persist("__Host-tossing-prefs")(
  class HostPrefs {
    theme = "light";
  },
);

describe("cookies a client controls", () => {
  let sessions: Sessions;
  let server: TestServer;
  const warnings: string[] = [];

  async function start(options: Parameters<typeof persistSession>[0] = {}) {
    sessions = persistSession({ secret: SECRET, store: new MemoryStore(), sweepInterval: 0, logger: { warn: (m) => void warnings.push(m), error: () => undefined }, ...options });
    server = await listen((req, res) =>
      sessions(req, res, () => {
        const url = new URL(req.url ?? "/", "http://x");
        if (url.pathname === "/claim") {
          const wallet = new Wallet();
          wallet.owner = url.searchParams.get("owner") ?? "?";
          wallet.coins += 1;
        }
        if (url.pathname === "/theme") new HostPrefs().theme = "dark";
        const { owner, coins } = new Wallet();
        res.end(JSON.stringify({ owner, coins }));
      }),
    );
  }
  afterEach(async () => {
    vi.restoreAllMocks();
    warnings.length = 0;
    await server.close();
    await sessions.close();
  });

  it("gives fresh state, and a warning, to a request carrying a key's cookie twice", async () => {
    await start();
    const victim = new Browser(server.url);
    const attacker = new Browser(server.url);
    await victim.json("/claim?owner=victim");
    await attacker.json("/claim?owner=attacker");
    const planted = attacker.cookies.get("tossing-wallet")!;
    const own = victim.cookies.get("tossing-wallet")!;
    // The planted cookie (longer Path) comes first, as browsers send it.
    for (const header of [`tossing-wallet=${planted}; tossing-wallet=${own}`, `tossing-wallet=${own}; other=1; tossing-wallet=${planted}`]) {
      expect(await victim.json("/", { cookie: header })).toEqual({ owner: "nobody", coins: 0 });
    }
    expect(warnings).toEqual([
      expect.stringMatching(/^persist-session: a request carried the cookie tossing-wallet more than once \(one may have been set by another subdomain\); it got fresh state\. Use a __Host- prefixed key/),
    ]);
    // The victim's change does not land in the attacker's record: it starts a record of its own.
    expect(await new Browser(server.url).json("/claim?owner=victim-again", { cookie: `tossing-wallet=${planted}; tossing-wallet=${own}` })).toEqual({
      owner: "victim-again",
      coins: 1,
    });
    expect(await attacker.json("/")).toEqual({ owner: "attacker", coins: 1 });
    expect(await victim.json("/")).toEqual({ owner: "victim", coins: 1 });
  });

  it("checks signatures only of registered keys, and at most maxCookies of them", async () => {
    await start({ maxCookies: 2 });
    const verify = vi.spyOn(CookieSigner.prototype, "verify");
    const forged = (i: number) => `${crypto.randomUUID()}.${"A".repeat(42)}${"ABCDEFGHIJ"[i % 10]}`;
    // 180 forged values, as the review sent (under the 16 KiB header limit of node:http).
    const header = Array.from({ length: 180 }, (_, i) => `f${i}=${forged(i)}`).join(";");
    expect(await new Browser(server.url).json("/", { cookie: header })).toEqual({ owner: "nobody", coins: 0 });
    expect(verify).toHaveBeenCalledTimes(0);
    expect(await new Browser(server.url).json("/", { cookie: `${header}; tossing-wallet=${forged(1)}; __Host-tossing-prefs=${forged(2)}` })).toEqual({
      owner: "nobody",
      coins: 0,
    });
    expect(verify).toHaveBeenCalledTimes(2);
  });

  it("sets a __Host- key's cookie with Secure and Path=/ and without Domain, whatever the options", async () => {
    await start({ cookie: { domain: "example.test", path: "/app", secure: false } });
    const browser = new Browser(server.url);
    const lines = [...(await browser.request("/theme")).headers.getSetCookie(), ...(await browser.request("/claim?owner=me")).headers.getSetCookie()];
    const host = lines.find((line) => line.startsWith("__Host-tossing-prefs="))!;
    expect(host).toMatch(/^__Host-tossing-prefs=[0-9a-f-]{36}\.[\w-]{43}; Max-Age=1209600; Path=\/; HttpOnly; Secure; SameSite=Lax$/);
    const plain = lines.find((line) => line.startsWith("tossing-wallet="))!;
    expect(plain).toMatch(/; Domain=example\.test; Path=\/app; HttpOnly; SameSite=Lax$/);
  });
});
