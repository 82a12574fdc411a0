// An Edge runtime (Next.js middleware, `runtime = "edge"`) resolves persist-session through the
// `edge-light` export condition to dist/edge.js: every runtime name the Node entries export, each
// throwing the message that names the Node.js runtime, so the bundle builds and says why it cannot run.
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";

const ENTRIES = [".", "./next"] as const;
const manifest = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as {
  exports: Record<string, Record<string, string>>;
};

describe("the Edge entry", () => {
  it.each(ENTRIES)("is what %s resolves to under the edge-light condition", (entry) => {
    const conditions = manifest.exports[entry]!;
    expect(conditions["edge-light"]).toBe("./dist/edge.js");
    // Types first and the Node.js build as the default: only an Edge bundler asks for edge-light.
    expect(Object.keys(conditions)).toEqual(["types", "edge-light", "default"]);
  });

  it.each(ENTRIES)("exports every runtime name of %s, each throwing the Node.js runtime message", async (entry) => {
    const node = (await import(new URL(`..${manifest.exports[entry]!.default!.slice(1)}`, import.meta.url).href)) as Record<string, unknown>;
    const edge = (await import("../dist/edge.js")) as Record<string, () => unknown>;
    for (const name of Object.keys(node)) {
      expect(typeof edge[name], name).toBe("function");
      expect(() => edge[name]!(), name).toThrow(/^persist-session: the Edge runtime cannot run persist-session: .* Use it on the Node\.js runtime/);
      expect(() => new (edge[name] as unknown as new () => unknown)(), name).toThrow(/Use it on the Node\.js runtime/);
    }
  });
});
