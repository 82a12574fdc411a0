// Helpers shared by the bench scripts: child servers, loopback requests, statistics, Markdown.
import { fork } from "node:child_process";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import http from "node:http";
import { PerformanceObserver, monitorEventLoopDelay } from "node:perf_hooks";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

export const BENCH_DIR = dirname(fileURLToPath(import.meta.url));
export const ROOT_DIR = dirname(BENCH_DIR);
export const DATA_DIR = join(BENCH_DIR, ".data");
export const SECRET = "bench-secret-0123456789abcdefghijklmnopqrstuvwxyz";

/** Starts `script` as a child process and resolves once it reports its port over IPC. */
export function startChild(script, args, { execPath, execArgv = [], env = {}, timeoutMs = 30_000 } = {}) {
  const child = fork(script, args, {
    execPath,
    execArgv,
    env: { ...process.env, BENCH_SECRET: SECRET, ...env },
    stdio: ["ignore", "inherit", "inherit", "ipc"],
  });
  const exited = new Promise((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));
  const ready = new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`${script} ${args.join(" ")} did not start within ${timeoutMs} ms`));
    }, timeoutMs);
    child.on("message", (message) => {
      if (message?.port !== undefined) {
        clearTimeout(timer);
        resolve(message.port);
      }
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`${script} ${args.join(" ")} exited with ${code} before it listened`));
    });
  });
  /** Sends `name` to the child and resolves with the `name` field of its answer. */
  const ask = (name) =>
    new Promise((resolve) => {
      const onMessage = (message) => {
        if (message?.[name] === undefined) return;
        child.off("message", onMessage);
        resolve(message[name]);
      };
      child.on("message", onMessage);
      child.send(name);
    });
  return {
    child,
    ready,
    /** Sends `name` to the child and resolves with the `name` field of its answer. */
    ask,
    /** Asks the child for process.memoryUsage() after a GC. */
    memory: () => ask("memory"),
    /** Asks the child for process.cpuUsage(): user and system CPU time in µs. */
    cpu: () => ask("cpu"),
    /** Stops the child (politely, then by force) and resolves once it is gone. */
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return exited;
      if (child.connected) child.send("stop");
      const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
      const result = await exited;
      clearTimeout(timer);
      return result;
    },
  };
}

const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });

/** One GET on loopback; resolves with status, headers and body text. */
export function get(port, path, headers = {}) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: "127.0.0.1", port, path, headers, agent }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (chunk) => (body += chunk));
      res.on("end", () => resolve({ status: res.statusCode, headers: res.headers, body }));
    });
    req.setTimeout(30_000, () => req.destroy(new Error(`GET ${path} timed out`)));
    req.on("error", reject);
    req.end();
  });
}

/** The `name=value` pairs of a response's Set-Cookie headers, as one Cookie header. */
export function cookieFrom(headers) {
  const setCookie = headers["set-cookie"] ?? [];
  return setCookie.map((line) => line.split(";")[0]).join("; ");
}

export function median(values) {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/** Percentile (0–100) of a sorted numeric array, nearest rank. */
export function percentile(sorted, p) {
  if (sorted.length === 0) return NaN;
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[rank];
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export function formatNumber(value, digits = 0) {
  if (value === undefined || value === null || Number.isNaN(value)) return "–";
  return value.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

/** A GitHub-flavoured Markdown table; the first column is left-aligned, the others right-aligned. */
export function markdownTable(header, rows) {
  const all = [header, ...rows].map((row) => row.map((cell) => String(cell)));
  const widths = header.map((_, i) => Math.max(3, ...all.map((row) => row[i].length)));
  const line = (row) => `| ${row.map((cell, i) => (i === 0 ? cell.padEnd(widths[i]) : cell.padStart(widths[i]))).join(" | ")} |`;
  const rule = `| ${widths.map((w, i) => (i === 0 ? "-".repeat(w) : `${"-".repeat(w - 1)}:`)).join(" | ")} |`;
  return [line(all[0]), rule, ...all.slice(1).map(line)].join("\n");
}

/** Name@version of the packages the bench compares, read from the installed copies. */
export function packageVersions() {
  const names = ["express", "express-session", "session-file-store", "connect-redis", "redis", "connect-pg-simple", "pg", "iron-session", "autocannon"];
  const versions = names.map((name) => {
    const file = join(BENCH_DIR, "node_modules", name, "package.json");
    return `${name}@${existsSync(file) ? JSON.parse(readFileSync(file, "utf8")).version : "missing"}`;
  });
  const own = JSON.parse(readFileSync(join(ROOT_DIR, "package.json"), "utf8")).version;
  return [`persist-session@${own} (this working tree)`, ...versions];
}

/**
 * Where the main thread's time went, from the kernel (Linux `/proc/<pid>/task/<pid>/schedstat`):
 * nanoseconds on a CPU and waiting for one; `undefined` elsewhere.
 */
function mainThreadSchedstat() {
  try {
    const [onCpu, waiting] = readFileSync(`/proc/${process.pid}/task/${process.pid}/schedstat`, "latin1").split(" ").map(Number);
    return { onCpu, waiting };
  } catch {
    return undefined;
  }
}

/**
 * Watches this process's event loop: monitorEventLoopDelay for the distribution, plus a 5 ms
 * interval that notes each stall over 50 ms with its wall-clock time (to line it up with the
 * control process), the GC pauses seen around then, and how the main thread spent the stall
 * (schedstat): on a CPU (running JavaScript, GC, or a system call: the process's own doing),
 * waiting in the run queue for a CPU (the machine's other work), or neither (blocked, e.g. on
 * GC helper threads). On two shared cores the first is what the process can be held to.
 */
export function watchEventLoop() {
  const delay = monitorEventLoopDelay({ resolution: 10 });
  delay.enable();
  const stalls = [];
  const gcs = [];
  const observer = new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) if (entry.duration > 20) gcs.push({ at: performance.timeOrigin + entry.startTime, ms: entry.duration, kind: entry.detail?.kind });
  });
  observer.observe({ entryTypes: ["gc"] });
  let last = performance.now();
  let lastSched = mainThreadSchedstat();
  const timer = setInterval(() => {
    const now = performance.now();
    const sched = mainThreadSchedstat();
    if (now - last > 50) {
      const stall = { at: performance.timeOrigin + last, ms: now - last };
      if (sched !== undefined && lastSched !== undefined) {
        stall.onCpuMs = (sched.onCpu - lastSched.onCpu) / 1e6;
        stall.runQueueMs = (sched.waiting - lastSched.waiting) / 1e6;
      }
      stalls.push(stall);
    }
    last = now;
    lastSched = sched;
  }, 5);
  return {
    stop() {
      clearInterval(timer);
      delay.disable();
      observer.disconnect();
      const onCpu = stalls.map((stall) => stall.onCpuMs).filter((ms) => ms !== undefined);
      return {
        maxDelayMs: delay.max / 1e6,
        p99DelayMs: delay.percentile(99) / 1e6,
        meanDelayMs: delay.mean / 1e6,
        stalls,
        gcs,
        /** The longest time the main thread was on a CPU within one stall over 50 ms (0: no stall). */
        maxStallOnCpuMs: onCpu.length === 0 ? 0 : Math.max(...onCpu),
      };
    },
  };
}

const RESULTS_FILE = join(BENCH_DIR, "RESULTS.md");
const SECTIONS = ["meta", "http", "postgres", "micro", "scale"];

/**
 * Replaces one section of bench/RESULTS.md, keeping the others, so `npm run bench -- scale`
 * refreshes the scale numbers without dropping the HTTP table of the last full run.
 */
export function writeResultsSection(name, markdown) {
  const text = existsSync(RESULTS_FILE) ? readFileSync(RESULTS_FILE, "utf8") : "";
  const sections = {};
  for (const section of SECTIONS) {
    const match = text.match(new RegExp(`<!-- ${section} -->\\n([\\s\\S]*?)<!-- /${section} -->`));
    sections[section] = match ? match[1] : "";
  }
  sections[name] = `${markdown.trimEnd()}\n`;
  const body = SECTIONS.filter((section) => sections[section] !== "")
    .map((section) => `<!-- ${section} -->\n${sections[section]}<!-- /${section} -->`)
    .join("\n\n");
  writeFileSync(
    RESULTS_FILE,
    `# persist-session benchmark results\n\nGenerated by \`npm run bench\` (bench/run.mjs); do not edit by hand. See bench/README.md for what each number means.\n\n${body}\n`,
  );
}
