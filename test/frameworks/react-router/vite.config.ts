import { reactRouter } from "@react-router/dev/vite";
import { defineConfig } from "vite";

// esbuild's es2022 target lowers @persist in the dev server: Node 20 cannot run decorators as written.
export default defineConfig({ plugins: [reactRouter()], esbuild: { target: "es2022" } });
