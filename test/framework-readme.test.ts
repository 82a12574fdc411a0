/**
 * The README's "Full-stack frameworks" section shows the code the framework
 * test apps run (test/frameworks/<name>/): each `// path` part of a snippet
 * must stand, line for line, in that app's file, and each framework's glue
 * stays within 15 lines of code.
 */
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";

const readme = readFileSync(new URL("../README.md", import.meta.url), "utf8");
const start = readme.indexOf("## Full-stack frameworks");
const section = readme.slice(start, readme.indexOf("\n## ", start + 1));
const appFile = (app: string, path: string) => readFileSync(new URL(`./frameworks/${app}/${path}`, import.meta.url), "utf8");
const snippets = (text: string) => [...text.matchAll(/```ts\n([\s\S]*?)```/g)].map((match) => match[1]!);

/** A snippet's parts, each under its `// path` line. */
function parts(snippet: string): Array<{ path: string; code: string }> {
  const result: Array<{ path: string; code: string }> = [];
  for (const line of snippet.split("\n")) {
    const header = /^\/\/ (\S+\.(?:ts|tsx|js|mjs|astro|svelte))$/.exec(line);
    if (header !== null) result.push({ path: header[1]!, code: "" });
    else if (result.length > 0) result.at(-1)!.code += `${line}\n`;
  }
  return result.map(({ path, code }) => ({ path, code: code.replace(/\n+$/, "\n") }));
}

const FRAMEWORKS = [
  { title: "### React Router 7", app: "react-router", state: "app/state.ts" },
  { title: "### SvelteKit 2", app: "sveltekit", state: "src/lib/server/state.ts" },
  { title: "### Astro 5", app: "astro", state: "src/state.ts" },
];

describe("README: Full-stack frameworks", () => {
  it("should show the state module every app runs", () => {
    const [state] = snippets(section);
    for (const { app, state: path } of FRAMEWORKS) expect(appFile(app, path), `${app}/${path}`).toBe(state);
  });

  for (const { title, app } of FRAMEWORKS) {
    it(`should show in "${title}" the code of test/frameworks/${app}, within 15 lines`, () => {
      const from = section.indexOf(title);
      expect(from).toBeGreaterThan(0);
      const next = section.indexOf("\n### ", from + 1);
      const subsection = section.slice(from, next === -1 ? undefined : next);
      const shown = snippets(subsection).flatMap(parts);
      expect(shown.length).toBeGreaterThan(0);
      for (const { path, code } of shown) expect(appFile(app, path), `${app}/${path}`).toContain(code);
      const lines = shown.flatMap(({ code }) => code.split("\n")).filter((line) => line.trim() !== "");
      expect(lines.length).toBeLessThanOrEqual(15);
    });
  }
});
