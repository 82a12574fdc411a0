// The README's Next.js section shows the files of the app the framework suite builds and
// serves (test/frameworks/next): each `// app/…` part of its snippet is that file, exactly.
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";

const README = readFileSync(new URL("../README.md", import.meta.url), "utf8");
const APP = new URL("./frameworks/next/", import.meta.url);

/** The first code block after `heading`, split into its `// <path>` parts. */
function snippetFiles(heading: string): Map<string, string> {
  const section = README.slice(README.indexOf(heading));
  const block = /```tsx\n([\s\S]*?)```/.exec(section)?.[1];
  if (block === undefined) throw new Error(`no tsx block under ${heading}`);
  const files = new Map<string, string>();
  for (const part of block.split(/^(?=\/\/ app\/)/m)) {
    const [first, ...rest] = part.split("\n");
    files.set(first!.slice("// ".length), rest.join("\n").trim());
  }
  return files;
}

describe("the README's Next.js section", () => {
  const files = snippetFiles("## Next.js (App Router)");

  it("shows the state, a Server Action, a Route Handler and a Server Component", () => {
    expect([...files.keys()]).toEqual(["app/state.ts", "app/actions.ts", "app/api/count/route.ts", "app/page.tsx"]);
  });

  it.each([...files])("shows %s as the suite's app has it", (path, shown) => {
    expect(shown).toBe(readFileSync(new URL(path, APP), "utf8").trim());
  });

  it("is at most 15 lines of code", () => {
    const code = [...files.values()].flatMap((text) => text.split("\n")).filter((line) => line.trim() !== "" && !line.trim().startsWith("//"));
    expect(code.length).toBeLessThanOrEqual(15);
  });

  it("gives the one tsconfig line decorators need, which the suite's app has", () => {
    const section = README.slice(README.indexOf("## Next.js (App Router)"));
    expect(section).toContain('"compilerOptions": { "experimentalDecorators": true }');
    const tsconfig = JSON.parse(readFileSync(new URL("tsconfig.json", APP), "utf8")) as { compilerOptions: Record<string, unknown> };
    expect(tsconfig.compilerOptions.experimentalDecorators).toBe(true);
  });
});
