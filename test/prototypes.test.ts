/**
 * Prototypes cannot be reached through persisted state (#17, point 3). The
 * review replaced an instance's prototype with `Object.assign(state, body)`
 * where `body = JSON.parse(request body)`: JSON.parse makes `__proto__` an own
 * property, and Object.assign hands it to the `__proto__` setter. Every such
 * route is refused at the assignment with its path; nothing of it is stored,
 * the class keeps its methods and getters, and Object.prototype stays clean.
 */
import { stringify } from "devalue";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MemoryStore, persistSession, UnpersistableValueError, type Sessions } from "../src/index.js";
import { unwrap } from "../src/tracking.js";
import * as standard from "./fixtures/standard.js";
import { capturingLogger } from "./helpers/robustness.js";
import { SECRET } from "./suites/behaviour.js";

const POLLUTING = '{"__proto__": {"polluted": "yes", "double": "gone"}}';

/** A recursive merge as apps and older libraries write it: the classic prototype-pollution route. */
function merge(target: Record<string, unknown>, source: Record<string, unknown>): void {
  for (const key of Object.keys(source)) {
    const value = source[key];
    if (typeof value === "object" && value !== null && typeof target[key] === "object" && target[key] !== null) {
      merge(target[key] as Record<string, unknown>, value as Record<string, unknown>);
    } else {
      target[key] = value;
    }
  }
}

/** Each route, and the path its refusal must name. */
const ROUTES: ReadonlyArray<readonly [string, (state: standard.AppState) => void, string]> = [
  ["Object.assign(state, JSON.parse(body))", (state) => Object.assign(state, JSON.parse(POLLUTING)), "AppState.__proto__"],
  ["Object.assign(state.prefs, JSON.parse(body))", (state) => Object.assign(state.prefs, JSON.parse(POLLUTING)), "AppState.prefs.__proto__"],
  ["state.__proto__ = value", (state) => void ((state as unknown as Record<string, unknown>).__proto__ = { polluted: "yes" }), "AppState.__proto__"],
  ["state.todos.__proto__ = value", (state) => void ((state.todos as unknown as Record<string, unknown>).__proto__ = { polluted: "yes" }), "AppState.todos.__proto__"],
  ["state.prefs = JSON.parse(body)", (state) => void (state.prefs = JSON.parse(POLLUTING) as Record<string, unknown>), "AppState.prefs.__proto__"],
  ["state.prefs.deep = { inner: JSON.parse(body) }", (state) => void (state.prefs.deep = { inner: JSON.parse(POLLUTING) }), "AppState.prefs.deep.inner.__proto__"],
  ["state.todos.push(JSON.parse(body))", (state) => void (state.todos as unknown[]).push(JSON.parse(POLLUTING)), "AppState.todos[0].__proto__"],
  ["state.tags.set(k, JSON.parse(body))", (state) => void (state.tags as Map<string, unknown>).set("k", JSON.parse(POLLUTING)), "AppState.tags.set().__proto__"],
  ["state.seen.add(JSON.parse(body))", (state) => void (state.seen as Set<unknown>).add(JSON.parse(POLLUTING)), "AppState.seen.add().__proto__"],
  ["Object.defineProperty(state, \"__proto__\", …)", (state) => Object.defineProperty(state, "__proto__", { value: {}, writable: true, enumerable: true, configurable: true }), "AppState.__proto__"],
  ["merge(state, JSON.parse(body))", (state) => merge(state as unknown as Record<string, unknown>, JSON.parse(POLLUTING)), "AppState.__proto__"],
  ["merge(state.prefs, JSON.parse(body))", (state) => merge(state.prefs, JSON.parse(POLLUTING)), "AppState.prefs.__proto__"],
  ["state.prefs = { ...JSON.parse(body) }", (state) => void (state.prefs = { ...(JSON.parse(POLLUTING) as object) }), "AppState.prefs.__proto__"],
  ["state.prefs = structuredClone(JSON.parse(body))", (state) => void (state.prefs = structuredClone(JSON.parse(POLLUTING)) as Record<string, unknown>), "AppState.prefs.__proto__"],
];

describe("prototypes cannot be reached through persisted state", () => {
  let store: MemoryStore;
  let sessions: Sessions;
  let cookie: string;
  let id: string;
  const logger = capturingLogger();

  beforeAll(async () => {
    store = new MemoryStore();
    // cacheSize 0: every request reads the store, so what was stored is what the next request finds.
    sessions = persistSession({ secret: SECRET, store, sweepInterval: 0, logger, cacheSize: 0 });
    const created = await sessions.fetch(async () => {
      const state = new standard.AppState();
      state.count = 21;
      state.prefs.theme = "dark";
      return new Response("created");
    })(new Request("http://localhost/"));
    cookie = created.headers.getSetCookie()[0]!.split(";")[0]!;
    id = cookie.slice(cookie.indexOf("=") + 1, cookie.indexOf("=") + 37);
  });
  afterAll(async () => {
    await sessions.close();
  });

  it.each(ROUTES)("refuses %s at the assignment, with its path, and stores nothing of it", async (_route, attack, path) => {
    const before = await store.get(id);
    let refusal: unknown;
    let seen: { proto: boolean; prefsProto: boolean; double: unknown; polluted: unknown } | undefined;
    const response = await sessions.fetch(async () => {
      const state = new standard.AppState();
      try {
        attack(state);
      } catch (error) {
        refusal = error;
      }
      seen = {
        proto: Object.getPrototypeOf(unwrap(state)) === Object.getPrototypeOf(new standard.AppState()),
        prefsProto: Object.getPrototypeOf(unwrap(state.prefs)) === Object.prototype,
        double: state.double,
        polluted: ({} as Record<string, unknown>).polluted,
      };
      return Response.json({ count: state.count });
    })(new Request("http://localhost/", { headers: { cookie } }));

    expect(refusal).toBeInstanceOf(UnpersistableValueError);
    expect((refusal as UnpersistableValueError).path).toBe(path);
    expect((refusal as Error).message).toMatch(new RegExp(`^persist-session: cannot persist ${path.replace(/[.[\]()]/g, "\\$&")} \\(a __proto__ key`));
    expect(seen).toEqual({ proto: true, prefsProto: true, double: 42, polluted: undefined });
    expect(await response.json()).toEqual({ count: 21 });
    // Nothing was written, and the next request finds the class intact.
    expect(await store.get(id)).toEqual(before);
    expect(logger.errors).toEqual([]);
    const again = await sessions.fetch(async () => {
      const state = new standard.AppState();
      return Response.json({ double: state.double, theme: state.prefs.theme, instance: state instanceof standard.AppState, keys: Object.keys(state.prefs) });
    })(new Request("http://localhost/", { headers: { cookie } }));
    expect(await again.json()).toEqual({ double: 42, theme: "dark", instance: true, keys: ["theme"] });
  });

  it("restores no record that carries __proto__, at the top or nested, into a prototype", async () => {
    const good = (await store.get(id))!;
    // devalue text of such objects, written as a forger would (devalue itself refuses to write them).
    const withKey = (value: unknown) => stringify(value).replaceAll("PROTO", "__proto__");
    const nullProto = Object.assign(Object.create(null) as object, { PROTO: { polluted: "yes" } });
    const crafted = [
      withKey({ count: 1, PROTO: { polluted: "yes" } }),
      withKey({ count: 1, prefs: { PROTO: { polluted: "yes" } } }),
      withKey({ count: 1, prefs: nullProto }),
      withKey({ count: 1, todos: [{ PROTO: { polluted: "yes" } }] }),
      withKey({ count: 1, tags: new Map([["k", { PROTO: { polluted: "yes" } }]]) }),
    ];
    for (const data of crafted) {
      await store.set(id, { ...good, version: good.version + 1, data });
      const response = await sessions.fetch(async () => {
        const state = new standard.AppState();
        return Response.json({
          count: state.count,
          proto: Object.getPrototypeOf(unwrap(state)) === Object.getPrototypeOf(new standard.AppState()),
          prefsProto: Object.getPrototypeOf(unwrap(state.prefs)) === Object.prototype,
          polluted: ({} as Record<string, unknown>).polluted ?? null,
        });
      })(new Request("http://localhost/", { headers: { cookie } }));
      // Set aside as unreadable: fresh state, never a prototype from the record.
      expect(await response.json(), data).toEqual({ count: 0, proto: true, prefsProto: true, polluted: null });
      expect(logger.warnings.at(-1)).toMatch(/could not be restored \(unreadable data: .*__proto__/);
    }
  });
});
