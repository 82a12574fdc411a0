/**
 * Crash safety of the FileStore and the commit point: a server killed with
 * SIGKILL at a random moment of a steady stream of writes loses no
 * acknowledged increment, leaves no unreadable record, and the next sweep
 * removes whatever the kill left behind: temporary files, and the empty file of
 * a first write that the kill cut between creating and writing it.
 *
 * Run for the FileStore and the durable one, whose journal every restart replays.
 * The kill points are seeded: the seed is printed, `SEED=<n>` reproduces them.
 */
import { existsSync } from "node:fs";
import { mkdtemp, readdir, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parse as parseDevalue } from "devalue";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FileStore } from "../src/index.js";
import { startChildServer, type ChildServer } from "./helpers/child-server.js";
import { seededRandom, testSeed } from "./helpers/robustness.js";

const FIXTURE = fileURLToPath(new URL("./fixtures/crash-server.mjs", import.meta.url));
const BUILT = fileURLToPath(new URL("../dist/index.js", import.meta.url));
const SECRET = "crash-test-secret-0123456789-abcdefghij";
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

const KILLS = 24;
const CLIENTS = 6;
/** Requests each client keeps in flight at once, all with its one cookie. */
const IN_FLIGHT = 2;

interface Client {
  readonly name: string;
  cookie: string | undefined;
  /** Every increment up to here was acknowledged: the stored count must be at least this. */
  acked: number;
  /** Increments sent so far: the stored count can be at most this. */
  sent: number;
  /** The highest count a response reported: it was stored before the response left. */
  highestAcknowledged: number;
}

type Server = ChildServer;

function startServer(dir: string, durable: boolean): Promise<Server> {
  return startChildServer(FIXTURE, [dir], { SESSION_SECRET: SECRET, DURABLE: durable ? "1" : "0" }, /listening (\d+)/);
}

async function kill(server: Server): Promise<void> {
  server.child.kill("SIGKILL");
  await server.exited;
}

/** One POST /inc; the client's counters follow what the server could have stored. */
async function increment(server: Server, client: Client): Promise<boolean> {
  client.sent++;
  let response: Response;
  try {
    response = await fetch(`${server.url}/inc`, { method: "POST", headers: client.cookie === undefined ? {} : { cookie: client.cookie } });
  } catch {
    return false; // killed: not acknowledged
  }
  if (response.status !== 200) throw new Error(`POST /inc answered ${response.status}: ${await response.text()}`);
  let body: { count: number };
  try {
    body = (await response.json()) as { count: number };
  } catch {
    return false; // killed while the body was on its way
  }
  const setCookie = response.headers.getSetCookie()[0];
  if (setCookie !== undefined) {
    const pair = setCookie.split(";")[0]!;
    if (client.cookie !== undefined && client.cookie !== pair) throw new Error(`${client.name}'s cookie changed: the record was replaced`);
    client.cookie = pair;
  }
  client.acked++;
  client.highestAcknowledged = Math.max(client.highestAcknowledged, body.count);
  return true;
}

/** Record files a kill left empty: first writes cut between creating the file and writing it. */
async function emptyRecords(dir: string): Promise<string[]> {
  const names = (await readdir(dir)).filter((name) => UUID.test(name));
  const sizes = await Promise.all(names.map(async (name) => (await stat(join(dir, name))).size));
  return names.filter((_, i) => sizes[i] === 0);
}

/** Every record file but those must read back as a record of the counter's key with an object of data. */
async function assertRecordsReadable(dir: string): Promise<string[]> {
  const names = await readdir(dir);
  expect(names.filter((name) => name.includes(".corrupt-")), "quarantined records").toEqual([]);
  const store = new FileStore({ dir });
  try {
    const empty = new Set(await emptyRecords(dir));
    for (const id of names.filter((name) => UUID.test(name) && !empty.has(name))) {
      const record = await store.get(id);
      expect(record, id).toBeDefined();
      expect(record!.key).toBe("crash-counter");
      const data = parseDevalue(record!.data) as { count: unknown; pad: unknown };
      expect(typeof data.count, id).toBe("number");
      expect(typeof data.pad, id).toBe("string");
    }
  } finally {
    // Its claim on the directory goes, so the next server process can start on it.
    await store.close();
  }
  return names;
}

describe.each([
  ["FileStore", false],
  ["durable FileStore", true],
] as const)("crash safety (SIGKILL mid-stream, %s)", (name, durable) => {
  const seed = testSeed();
  let dir: string;
  let server: Server | undefined;

  beforeAll(async () => {
    if (!existsSync(BUILT)) throw new Error("dist/ is missing: run `npm run build` (npm test does) before this suite.");
    dir = await mkdtemp(join(tmpdir(), "persist-session-crash-"));
    console.log(`crash.test.ts: seed ${seed} (run with SEED=${seed} to repeat these kill points)`);
  });
  afterAll(async () => {
    if (server !== undefined) await kill(server);
    await rm(dir, { recursive: true, force: true });
  });

  it(`loses no acknowledged increment over ${KILLS} kills at random points`, async () => {
    const random = seededRandom(seed);
    const clients: Client[] = Array.from({ length: CLIENTS }, (_, i) => ({ name: `client-${i}`, cookie: undefined, acked: 0, sent: 0, highestAcknowledged: 0 }));
    let tempsLeftByKills = 0;
    let emptyLeftByKills = 0;
    let totalAcknowledged = 0;

    for (let round = 0; round <= KILLS; round++) {
      server = await startServer(dir, durable);
      const current = server;

      // What the previous process acknowledged is all there, and nothing that was never sent.
      for (const client of clients) {
        if (client.cookie === undefined) continue;
        const response = await fetch(`${current.url}/state`, { headers: { cookie: client.cookie } });
        expect(response.status).toBe(200);
        const { count } = (await response.json()) as { count: number };
        const where = `round ${round}, ${client.name} (seed ${seed})`;
        expect(count, where).toBeGreaterThanOrEqual(client.acked);
        expect(count, where).toBeGreaterThanOrEqual(client.highestAcknowledged);
        expect(count, where).toBeLessThanOrEqual(client.sent);
        client.acked = client.sent = client.highestAcknowledged = count;
      }
      // The kill's leftovers go with the first sweep.
      const sweep = await fetch(`${current.url}/sweep`, { method: "POST" });
      expect(sweep.status).toBe(200);
      expect((await readdir(dir)).filter((name) => name.endsWith(".tmp")), `temporary files after a sweep (round ${round})`).toEqual([]);
      expect(await emptyRecords(dir), `empty record files after a sweep (round ${round})`).toEqual([]);
      if (round === KILLS) break;

      // Kill after a seeded number of acknowledgements, sometimes a few milliseconds later still.
      const killAfter = 1 + Math.floor(random() * 60);
      const extraDelay = random() < 0.5 ? 0 : random() * 4;
      let acknowledged = 0;
      let killed = false;
      let killing: Promise<void> | undefined;
      const stop = () => {
        killed = true;
        killing ??= kill(current);
      };
      const run = async (client: Client) => {
        // The first request alone: it mints the client's one record.
        if (client.cookie === undefined && (killed || !(await increment(current, client)))) return;
        const loop = async () => {
          while (!killed) {
            if (!(await increment(current, client))) return;
            if (++acknowledged === killAfter) {
              if (extraDelay === 0) stop();
              else setTimeout(stop, extraDelay);
            }
          }
        };
        await Promise.all(Array.from({ length: IN_FLIGHT }, loop));
      };
      await Promise.all(clients.map(run));
      await killing;
      totalAcknowledged += acknowledged;
      expect(current.stderr.join(""), "the server's log").not.toMatch(/could not be restored|ERROR/);

      // No unreadable record, whatever the kill interrupted.
      const names = await assertRecordsReadable(dir);
      tempsLeftByKills += names.filter((name) => name.endsWith(".tmp")).length;
      emptyLeftByKills += (await emptyRecords(dir)).length;
    }

    const final = server!;
    server = undefined;
    await kill(final);
    await assertRecordsReadable(dir);
    console.log(
      `crash.test.ts (${name}): ${KILLS} kills, ${totalAcknowledged} acknowledged increments, ${tempsLeftByKills} temporary files and ${emptyLeftByKills} empty records left by kills and swept, ` +
        `final counts ${clients.map((client) => client.acked).join(", ")}`,
    );
    expect(clients.every((client) => client.cookie !== undefined)).toBe(true);
  }, 90_000);
});
