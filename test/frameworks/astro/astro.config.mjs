import node from "@astrojs/node";
import { defineConfig } from "astro/config";

export default defineConfig({
  output: "server",
  adapter: node({ mode: "standalone" }),
  // esbuild's es2022 target lowers @persist in the dev server: Node 20 cannot run decorators as written.
  vite: { esbuild: { target: "es2022" } },
});
