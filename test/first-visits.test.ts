/**
 * Parallel first visits (#17, point 9). Requests of one browser that carry its
 * cookie are serialized per record; requests sent before the browser has a
 * cookie cannot be (no record names them yet), so each starts a record of its
 * own: 10 parallel first requests make 10 records, each with its own cookie and
 * its own change, none lost into another's. The README's promise says so.
 */
import { readFile } from "node:fs/promises";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import * as standard from "./fixtures/standard.js";
import { storeKinds, type StoreBacking } from "./helpers/stores.js";
import { startApp, type AdapterName, type RunningApp } from "./suites/behaviour.js";

const FIRST_REQUESTS = 10;

it("says so in the README's promise, beside the promise about overlapping requests", async () => {
  const readme = await readFile(new URL("../README.md", import.meta.url), "utf8");
  const promise = readme.slice(readme.indexOf("## What it promises"), readme.indexOf("## How it works"));
  const overlap = promise.split("\n").find((line) => line.startsWith("- **Nothing lost when requests overlap.**"));
  expect(overlap).toContain(`${FIRST_REQUESTS} parallel first requests make ${FIRST_REQUESTS} records`);
});

for (const kind of storeKinds) {
  for (const adapter of ["node:http", "fetch"] as const satisfies readonly AdapterName[]) {
    describe(`parallel first visits · ${kind.name} · ${adapter}`, () => {
      let backing: StoreBacking;
      let app: RunningApp;

      beforeEach(async () => {
        backing = await kind.create();
        app = await startApp(standard, adapter, backing.open());
      });
      afterEach(async () => {
        await app.close();
        await backing.cleanup();
      });

      it(`starts a record of its own for each of ${FIRST_REQUESTS} parallel first requests without a cookie`, async () => {
        const browsers = Array.from({ length: FIRST_REQUESTS }, () => app.browser());
        const replies = await Promise.all(browsers.map((browser) => browser.json<{ count: number }>("/inc", { method: "POST" })));
        expect(replies.map((reply) => reply.count)).toEqual(browsers.map(() => 1));
        const cookies = browsers.map((browser) => browser.cookies.get("std-app"));
        expect(new Set(cookies).size, "distinct cookies").toBe(FIRST_REQUESTS);
        const ids = cookies.map((cookie) => cookie!.slice(0, 36));
        expect((await backing.ids()).sort()).toEqual([...ids].sort());
        // Each record holds its own request's change, and only that.
        for (const browser of browsers) expect((await browser.json<{ count: number }>("/state")).count).toBe(1);
      });
    });
  }
}
