import { spawn, type ChildProcess } from "node:child_process";

/** A test server running as its own Node process, so it can be killed, paused and restarted. */
export interface ChildServer {
  readonly child: ChildProcess;
  readonly url: string;
  /** What it wrote to stderr so far (persist-session's log lines go there in the fixtures). */
  readonly stderr: string[];
  readonly exited: Promise<void>;
}

/**
 * Starts `node script ...args` and resolves once its stdout matches `listening`
 * (whose first group is the port); rejects, with its stderr, if it exits first.
 */
export async function startChildServer(script: string, args: string[], env: Record<string, string>, listening: RegExp): Promise<ChildServer> {
  const child = spawn(process.execPath, [script, ...args], { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  const stderr: string[] = [];
  child.stderr!.setEncoding("utf8").on("data", (chunk: string) => stderr.push(chunk));
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const port = await new Promise<number>((resolve, reject) => {
    let out = "";
    child.stdout!.setEncoding("utf8").on("data", (chunk: string) => {
      out += chunk;
      const match = listening.exec(out);
      if (match !== null) resolve(Number(match[1]));
    });
    child.once("exit", (code) => reject(new Error(`${script} exited (${code}) before listening: ${stderr.join("")}`)));
  });
  return { child, url: `http://127.0.0.1:${port}`, stderr, exited };
}
