import { spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import net from "node:net";
import { fileURLToPath } from "node:url";

export const ROOT = fileURLToPath(new URL("../..", import.meta.url));

/** The one stderr line the demo is expected to print: it runs without SESSION_SECRET on purpose. */
export const SECRET_WARNING = "persist-session: no secret given";

const START_LINE = "persist-session demo on http://";
const START_TIMEOUT_MS = 10_000;
const STOP_TIMEOUT_MS = 5_000;

/** One `node demo/server.js` child process, with everything it printed. */
export class DemoProcess {
  stdout = "";
  stderr = "";
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;

  private constructor(
    readonly child: ChildProcess,
    readonly url: string,
  ) {
    this.exited = new Promise((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));
    child.stdout!.setEncoding("utf8").on("data", (chunk: string) => (this.stdout += chunk));
    child.stderr!.setEncoding("utf8").on("data", (chunk: string) => (this.stderr += chunk));
  }

  /** Starts the demo on `port` with its records in `dir`, and resolves once it has logged its start line. */
  static async start(port: number, dir: string): Promise<DemoProcess> {
    if (!existsSync(new URL("../../dist/index.js", import.meta.url))) {
      throw new Error("dist/ is missing: run `npm run build` first (`npm run test:e2e` does).");
    }
    const env: NodeJS.ProcessEnv = { ...process.env, PORT: String(port), PERSIST_SESSION_DIR: dir };
    // The suite covers the generated-secret default, and the demo must listen where the browser looks.
    delete env.SESSION_SECRET;
    delete env.HOST;
    const child = spawn(process.execPath, ["demo/server.js"], { cwd: ROOT, env, stdio: ["ignore", "pipe", "pipe"] });
    const demo = new DemoProcess(child, `http://127.0.0.1:${port}`);
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => fail(`did not log its start line within ${START_TIMEOUT_MS} ms`), START_TIMEOUT_MS);
      const onData = () => {
        if (!demo.stdout.includes(START_LINE)) return;
        done();
        resolve();
      };
      const onExit = (code: number | null, signal: string | null) => fail(`exited early (code ${code}, signal ${signal})`);
      const done = () => {
        clearTimeout(timer);
        child.stdout!.off("data", onData);
        child.off("exit", onExit);
      };
      const fail = (why: string) => {
        done();
        child.kill("SIGKILL");
        reject(new Error(`The demo ${why}.\nstdout:\n${demo.stdout}\nstderr:\n${demo.stderr}`));
      };
      child.stdout!.on("data", onData);
      child.once("exit", onExit);
    });
    return demo;
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Sends `signal` and waits for the process to exit; SIGKILLs it if it takes too long. */
  async stop(signal: NodeJS.Signals = "SIGTERM"): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    if (this.running) {
      this.child.kill(signal);
      const timer = setTimeout(() => this.child.kill("SIGKILL"), STOP_TIMEOUT_MS);
      try {
        return await this.exited;
      } finally {
        clearTimeout(timer);
      }
    }
    return this.exited;
  }

  /** Everything printed that is not the expected secret warning; a crash or a logged stack shows up here. */
  unexpectedOutput(): string[] {
    const lines = `${this.stdout}\n${this.stderr}`.split("\n").filter((line) => line.trim() !== "");
    return lines.filter((line) => !line.startsWith(START_LINE) && !line.startsWith(SECRET_WARNING));
  }
}

/** A TCP port that was free a moment ago on the loopback interface. */
export async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve, reject) => server.once("error", reject).listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}
