/**
 * The node:http response gate on its own (src/adapters/response-gate.ts): what
 * it holds, when it lets go, and what it drops after a failure, over a real
 * node:http server and a stand-in for the request it guards. Each case runs on
 * node's own response and on one whose prototype was replaced, as Express does
 * per request (the gate installs other functions there).
 */
import http from "node:http";
import { afterEach, describe, expect, it } from "vitest";
import { ResponseGate, type GateOwner } from "../src/adapters/response-gate.js";
import type { CommitResult } from "../src/request-state.js";
import type { SetCookie } from "../src/set-cookie.js";
import { listen, type TestServer } from "./helpers/http.js";

const cookie: SetCookie = {
  name: "k",
  value: "v",
  attributes: { httpOnly: true, secure: false, sameSite: "lax", path: "/", maxAge: 60 },
  header: "k=v; Max-Age=60; Path=/; HttpOnly; SameSite=Lax",
};

/** An owner whose commit is stored when the test says so. */
function owner(options: { failCommit?: Error } = {}) {
  let store!: () => void;
  let refuse!: (error: Error) => void;
  const stored = new Promise<void>((resolve, reject) => {
    store = resolve;
    refuse = reject;
  });
  const calls = { statuses: [] as number[], failures: [] as unknown[] };
  const gateOwner: GateOwner & { res?: http.ServerResponse } = {
    commitPoint(status: number): CommitResult {
      calls.statuses.push(status);
      if (options.failCommit !== undefined) throw options.failCommit;
      return { cookies: [cookie], stored };
    },
    fail(error: unknown) {
      calls.failures.push(error);
      gateOwner.res!.writeHead(500).end("failed");
    },
  };
  return { gateOwner, calls, store: () => store(), refuse: (error: Error) => refuse(error) };
}

/** Express's way: a prototype of its own over ServerResponse's, set on each response. */
const replacedPrototype = Object.create(http.ServerResponse.prototype, { app: { value: "an app" } }) as object;

describe.each([
  ["node's own response", (res: http.ServerResponse) => res],
  ["a response whose prototype was replaced", (res: http.ServerResponse) => Object.setPrototypeOf(res, replacedPrototype) as http.ServerResponse],
])("ResponseGate on %s", (_name, prepare) => {
  let server: TestServer | undefined;
  afterEach(async () => {
    await server?.close();
    server = undefined;
  });

  it("commits at the first write with the status, holds every call until stored, then sends them in order with the cookie", async () => {
    const control = owner();
    const phases: string[] = [];
    server = await listen((req, plain) => {
      const res = prepare(plain);
      control.gateOwner.res = res;
      const gate = new ResponseGate(res, control.gateOwner);
      res.statusCode = 201;
      expect(res.write("a")).toBe(true);
      phases.push(gate.phase);
      res.write("b");
      res.end("c");
      expect(res.headersSent).toBe(false);
      setTimeout(() => {
        control.store();
        setImmediate(() => phases.push(gate.phase));
      }, 30);
    });
    const response = await fetch(server.url);
    expect(response.status).toBe(201);
    expect(await response.text()).toBe("abc");
    expect(response.headers.getSetCookie()).toEqual([cookie.header]);
    expect(control.calls.statuses).toEqual([201]);
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(phases).toEqual(["waiting", "passing"]);
  });

  it("merges its cookie into writeHead's own headers and passes writeHead's status", async () => {
    const control = owner();
    server = await listen((req, plain) => {
      const res = prepare(plain);
      control.gateOwner.res = res;
      new ResponseGate(res, control.gateOwner);
      res.writeHead(503, { "Set-Cookie": "app=1", "content-type": "text/plain" }).end("x");
      control.store();
    });
    const response = await fetch(server.url);
    expect(response.status).toBe(503);
    expect(response.headers.getSetCookie()).toEqual(["app=1", cookie.header]);
    expect(control.calls.statuses).toEqual([503]);
  });

  it("answers a failed write with the owner's failure and drops what the handler writes after it", async () => {
    const control = owner();
    const errors: unknown[] = [];
    server = await listen((req, plain) => {
      const res = prepare(plain);
      control.gateOwner.res = res;
      res.on("error", (error) => errors.push(error));
      const gate = new ResponseGate(res, control.gateOwner);
      res.end("held");
      control.refuse(new Error("disk full"));
      setTimeout(() => {
        expect(gate.phase).toBe("failed");
        expect(res.write("late")).toBe(false);
        res.end("later");
      }, 20);
    });
    const response = await fetch(server.url);
    expect(response.status).toBe(500);
    expect(await response.text()).toBe("failed");
    await new Promise((resolve) => setTimeout(resolve, 40));
    expect(control.calls.failures).toHaveLength(1);
    expect(errors).toEqual([]);
  });

  it("holds the response for a second gate on it too (two middlewares) and sends it once, after both are stored", async () => {
    const first = owner();
    const second = owner();
    let bothStored = false;
    server = await listen((req, plain) => {
      const res = prepare(plain);
      first.gateOwner.res = res;
      second.gateOwner.res = res;
      new ResponseGate(res, first.gateOwner);
      new ResponseGate(res, second.gateOwner);
      res.end("once");
      setTimeout(() => {
        second.store();
        setTimeout(() => {
          bothStored = true;
          first.store();
        }, 20);
      }, 20);
    });
    const response = await fetch(server.url);
    expect(await response.text()).toBe("once");
    expect(bothStored).toBe(true);
    expect(response.headers.getSetCookie()).toEqual([cookie.header, cookie.header]);
    expect([first.calls.statuses, second.calls.statuses]).toEqual([[200], [200]]);
  });

  it("answers a commit that throws, without sending the handler's response", async () => {
    const control = owner({ failCommit: new Error("too large") });
    server = await listen((req, plain) => {
      const res = prepare(plain);
      control.gateOwner.res = res;
      new ResponseGate(res, control.gateOwner);
      res.end("the handler's answer");
    });
    const response = await fetch(server.url);
    expect(response.status).toBe(500);
    expect(await response.text()).toBe("failed");
    expect(response.headers.getSetCookie()).toEqual([]);
  });
});

describe("ResponseGate on a response whose prototype was replaced", () => {
  it("says what is wrong when a gated method is called without the response as `this`", async () => {
    const control = owner();
    let detached: unknown;
    const server = await listen((req, plain) => {
      const res = Object.setPrototypeOf(plain, replacedPrototype) as http.ServerResponse;
      control.gateOwner.res = res;
      new ResponseGate(res, control.gateOwner);
      const { write } = res;
      try {
        Reflect.apply(write, undefined, ["x"]);
      } catch (error) {
        detached = error;
      }
      res.end("ok");
      control.store();
    });
    try {
      const response = await fetch(server.url);
      expect(await response.text()).toBe("ok");
      expect(detached).toBeInstanceOf(TypeError);
      expect((detached as Error).message).toMatch(/without the response it belongs to as `this`/);
    } finally {
      await server.close();
    }
  });
});
