/**
 * The README's "Server frameworks" snippets are the code the framework suites run
 * (test/frameworks/<app>, between `// #region readme` and `// #endregion readme`),
 * short, and free of casts. The suites themselves type-check and run those apps.
 */
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";

const readme = readFileSync(new URL("../README.md", import.meta.url), "utf8");
const frameworks = readme.slice(readme.indexOf("## Server frameworks"), readme.indexOf("## Writing an adapter"));

/** Each section, and the app files whose README region it shows. */
const SECTIONS: ReadonlyArray<readonly [heading: string, files: readonly string[]]> = [
  ["### Express 4 and 5", ["express/src/app.ts"]],
  ["### Hono", ["hono/src/app.ts"]],
  ["### Fastify", ["fastify/src/server.ts"]],
  ["### Koa", ["koa/src/app.ts"]],
  ["### h3 (Nuxt 3, Nitro)", ["h3/src/app.ts"]],
  ["### NestJS (Express platform)", ["nest/src/app.module.ts"]],
];

function snippetOf(heading: string): string {
  const start = frameworks.indexOf(`${heading}\n`);
  expect(start, `README section ${heading}`).toBeGreaterThanOrEqual(0);
  const code = /```ts\n([\s\S]*?)```/.exec(frameworks.slice(start));
  return code![1]!;
}

function regionOf(file: string): string {
  const source = readFileSync(new URL(`./frameworks/${file}`, import.meta.url), "utf8");
  const region = /\/\/ #region readme\n([\s\S]*?)\/\/ #endregion readme\n/.exec(source);
  expect(region, `the readme region of ${file}`).not.toBeNull();
  return region![1]!;
}

describe("README: Server frameworks", () => {
  it("has a section for every framework app, and nothing else", () => {
    expect(frameworks.match(/^### .*$/gm)).toEqual(SECTIONS.map(([heading]) => heading));
  });

  it.each(SECTIONS)("%s shows what the app runs, in at most 10 lines, with no casts", (heading, files) => {
    const snippet = snippetOf(heading);
    for (const file of files) expect(snippet, file).toBe(regionOf(file));
    expect(snippet.split("\n").filter((line) => line.trim() !== "").length).toBeLessThanOrEqual(10);
    expect(snippet).not.toMatch(/\bas\s+(?!const\b)[A-Za-z{[]|\bany\b|<[A-Z]\w*>\s*\w|!\./);
  });
});
