import { spawnSync } from "node:child_process";
import { chownSync, existsSync, readdirSync, readFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { delay, eventually } from "./robustness.js";
import { freePort } from "./outage.js";

/**
 * A PostgreSQL server of a suite's own (initdb + pg_ctl from Debian's packages), on a free
 * port in a temporary folder, stopped, paused and resumed by its PID: an outage test must
 * never touch the machine's server on 5432, which other suites use at the same time.
 * As root it runs as the `postgres` user (PostgreSQL refuses to run as root).
 */

/** The newest /usr/lib/postgresql/<version>/bin that has initdb and pg_ctl; `undefined` when none. */
export const postgresBin = ((): string | undefined => {
  const root = "/usr/lib/postgresql";
  if (!existsSync(root)) return undefined;
  const versions = readdirSync(root)
    .filter((name) => /^\d+$/.test(name))
    .sort((a, b) => Number(b) - Number(a));
  return versions.map((version) => join(root, version, "bin")).find((bin) => existsSync(join(bin, "initdb")) && existsSync(join(bin, "pg_ctl")));
})();

const asRoot = process.getuid?.() === 0;

/** Runs a PostgreSQL tool, as the `postgres` user when this process is root; throws with its output when it fails. */
function runTool(tool: string, args: string[]): void {
  const command = join(postgresBin!, tool);
  const result = asRoot ? spawnSync("runuser", ["-u", "postgres", "--", command, ...args], { encoding: "utf8" }) : spawnSync(command, args, { encoding: "utf8" });
  if (result.status !== 0) throw new Error(`${tool} ${args.join(" ")} failed (${result.status}): ${result.stderr}${result.stdout}`);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

export class PrivatePostgres {
  #pid: number | undefined;

  private constructor(
    readonly port: number,
    readonly dir: string,
  ) {}

  /** A new cluster (trust authentication, user `postgres`), not started yet. */
  static async create(): Promise<PrivatePostgres> {
    const dir = await mkdtemp(join(tmpdir(), "persist-session-pg-"));
    if (asRoot) {
      const postgres = spawnSync("id", ["-u", "postgres"], { encoding: "utf8" });
      const group = spawnSync("id", ["-g", "postgres"], { encoding: "utf8" });
      chownSync(dir, Number(postgres.stdout.trim()), Number(group.stdout.trim()));
    }
    runTool("initdb", ["-D", join(dir, "data"), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync", "--no-instructions"]);
    return new PrivatePostgres(await freePort(), dir);
  }

  get url(): string {
    return `postgres://postgres@127.0.0.1:${this.port}/postgres`;
  }

  get running(): boolean {
    return this.#pid !== undefined && alive(this.#pid);
  }

  /** Starts the server (on the same port and data each time) and waits until it accepts connections. */
  async start(): Promise<void> {
    const options = `-p ${this.port} -k ${this.dir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=60`;
    runTool("pg_ctl", ["-D", join(this.dir, "data"), "-l", join(this.dir, "log"), "-w", "-t", "60", "-o", options, "start"]);
    // The first line of postmaster.pid is the server's PID.
    this.#pid = Number(readFileSync(join(this.dir, "data", "postmaster.pid"), "utf8").split("\n")[0]);
  }

  /** Stops the server at once, as a crash or a kill would (SIGQUIT: immediate shutdown), and waits until it is gone. */
  async stop(): Promise<void> {
    const pid = this.#pid;
    if (pid === undefined) return;
    this.resume();
    process.kill(pid, "SIGQUIT");
    await eventually(() => !alive(pid), `PostgreSQL (pid ${pid}) to stop`, 30_000);
    this.#pid = undefined;
    // Its children leave with it; give the port a moment to be free for the next start.
    await delay(50);
  }

  /** Freezes the server and every one of its processes (SIGSTOP): it accepts TCP connections but answers nothing. */
  pause(): void {
    for (const pid of this.#processes()) process.kill(pid, "SIGSTOP");
  }

  resume(): void {
    for (const pid of this.#processes()) {
      try {
        process.kill(pid, "SIGCONT");
      } catch {
        // Gone already.
      }
    }
  }

  /** Stops the server if it runs and removes its folder. */
  async destroy(): Promise<void> {
    if (this.running) await this.stop();
    await rm(this.dir, { recursive: true, force: true });
  }

  /** The server's PID and its children's (backends, background workers). */
  #processes(): number[] {
    const pid = this.#pid;
    if (pid === undefined) return [];
    const children = spawnSync("pgrep", ["-P", String(pid)], { encoding: "utf8" }).stdout.split("\n").filter(Boolean).map(Number);
    return [pid, ...children];
  }
}
