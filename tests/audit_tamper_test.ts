/**
 * The audit log against someone who can write the database but does not hold the key: real
 * egress rows written by the running program, tampered with through a separate libSQL client,
 * then checked by `main.ts audit verify` run as a child with the manifest's permission flags.
 */
import { type Client, createClient } from "@libsql/client";
import assert from "node:assert/strict";
import { join } from "node:path";
import { loadConfig } from "../src/config/config.ts";
import { rowHash } from "../src/egress/audit.ts";
import { runtimeFlags } from "../src/permissions/flags.ts";
import type { StoredAuditRow } from "../src/store/audit_table.ts";
import { Collector } from "./helpers/collector.ts";
import { eventually } from "./helpers/eventually.ts";
import { MAIN, postJson, PROJECT_ROOT, startOutpost, writeManifest } from "./helpers/outpost_process.ts";

interface Command {
  code: number;
  report: Record<string, unknown>;
  stdout: string;
  stderr: string;
}

/** Runs `main.ts audit <args>` for `dataDir` as the real command, under the derived flags. */
async function audit(manifest: string, dataDir: string, args: string[], stdin?: string): Promise<Command> {
  const config = await loadConfig(manifest, { dataDir });
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--cached-only",
      ...runtimeFlags(config, { projectRoot: PROJECT_ROOT }),
      MAIN,
      "audit",
      ...args,
      "--manifest",
      manifest,
      "--data-dir",
      dataDir,
    ],
    stdin: stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).spawn();
  if (stdin !== undefined) {
    const writer = child.stdin.getWriter();
    await writer.write(new TextEncoder().encode(stdin));
    await writer.close();
  }
  const output = await child.output();
  const stdout = new TextDecoder().decode(output.stdout);
  const stderr = new TextDecoder().decode(output.stderr);
  let report: Record<string, unknown> = {};
  try {
    report = JSON.parse(stdout);
  } catch { /* export writes JSON lines, or nothing */ }
  return { code: output.code, report, stdout, stderr };
}

async function withClient<T>(dataDir: string, fn: (client: Client) => Promise<T>): Promise<T> {
  const client = createClient({ url: `file:${join(dataDir, "outpost.db")}` });
  try {
    return await fn(client);
  } finally {
    client.close();
  }
}

type Row = StoredAuditRow;

async function rows(client: Client): Promise<Row[]> {
  const result = await client.execute("SELECT * FROM egress_audit ORDER BY id");
  return result.rows.map((row) => ({
    id: Number(row.id),
    tsMs: Number(row.ts_ms),
    destination: String(row.destination),
    purpose: String(row.purpose),
    bytesOut: Number(row.bytes_out),
    bytesIn: Number(row.bytes_in),
    outcome: String(row.outcome),
    error: row.error === null ? undefined : String(row.error),
    prevHash: String(row.prev_hash),
    hash: String(row.hash),
  }));
}

/** Asserts a failed verify that names `problem`, exits 1 and prints no stack trace. */
function assertProblem(result: Command, problem: string) {
  assert.equal(result.code, 1, `${result.stdout}\n${result.stderr}`);
  assert.equal(result.report.ok, false, `${result.stdout}\n${result.stderr}`);
  assert.equal(result.report.problem, problem, result.stdout);
  assert.match(result.stderr, new RegExp(`Audit log not intact: ${problem}`));
  assert.doesNotMatch(result.stderr + result.stdout, /\n\s+at /, "no stack trace");
}

/** A data dir with real egress audit rows, written by the running program through a collector. */
async function writtenLog(dir: string): Promise<{ manifest: string; dataDir: string }> {
  const collector = await Collector.create();
  const manifest = await writeManifest(dir, {
    egressAllowed: [collector.destination],
    forwarding: ["raw: true", "batchSize: 1", `http: { url: "${collector.url}" }`],
    logLevel: "warn",
  });
  try {
    const outpost = await startOutpost(manifest);
    for (let i = 0; i < 6; i++) {
      const response = await postJson(`${outpost.url}/v1/readings`, {
        device: "d",
        ts: 1_763_805_600_000 + i,
        values: { a: i },
      });
      await response.body?.cancel();
    }
    await eventually(() => collector.items().length, (n) => n >= 6);
    assert.equal(await outpost.stop(), 0);
  } finally {
    await collector.stop();
  }
  return { manifest, dataDir: join(dir, "data") };
}

/** A copy of the data dir (database, head, key) to tamper with. */
async function copyOf(dataDir: string, to: string): Promise<string> {
  await new Deno.Command("cp", { args: ["-a", dataDir, to] }).output();
  return to;
}

Deno.test("audit verify names each kind of tampering without the key, exits 1 and never prints a stack trace", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const { manifest, dataDir } = await writtenLog(dir);
    const intact = await audit(manifest, dataDir, ["verify"]);
    assert.equal(intact.code, 0, intact.stdout + intact.stderr);
    assert.equal(intact.report.ok, true);
    assert.ok((intact.report.rows as number) >= 6);
    assert.equal(intact.report.legacyRows, 0);
    assert.match(String(intact.report.keySource), /^default: .*keys\/audit\.key$/);
    const last = intact.report.lastId as number;
    const head = JSON.parse(await Deno.readTextFile(join(dataDir, "audit-head.json")));
    assert.equal(head.lastId, last);
    assert.equal((await Deno.stat(join(dataDir, "keys", "audit.key"))).mode! & 0o777, 0o600);

    let n = 0;
    const tampered = async (fn: (client: Client, copy: string) => Promise<unknown>) => {
      const copy = await copyOf(dataDir, join(dir, `copy-${n++}`));
      await withClient(copy, (client) => fn(client, copy));
      return await audit(manifest, copy, ["verify"]);
    };

    assertProblem(await tampered((c) => c.execute(`DELETE FROM egress_audit WHERE id > ${last - 2}`)), "truncated");
    assertProblem(await tampered((c) => c.execute("DELETE FROM egress_audit")), "emptied");
    assertProblem(await tampered((c) => c.execute("UPDATE egress_audit SET bytes_out = 1 WHERE id = 3")), "edited");
    assertProblem(await tampered((c) => c.execute("DELETE FROM egress_audit WHERE id = 2")), "deleted");
    assertProblem(
      await tampered((c) => c.execute("DELETE FROM egress_audit WHERE id <= 2")),
      "deleted",
    );
    assertProblem(
      await tampered(async (c) => {
        // Pruning by hand: delete the start and leave a checkpoint that is not signed.
        const [, second] = await rows(c);
        await c.execute("DELETE FROM egress_audit WHERE id <= 2");
        await c.execute({
          sql: "INSERT INTO audit_checkpoints (cut_id, cut_hash, created_ms) VALUES (2, ?, ?)",
          args: [second.hash, Date.now()],
        });
      }),
      "deleted",
    );
    assertProblem(
      await tampered(async (c) => {
        await c.execute("UPDATE egress_audit SET id = -1 WHERE id = 3");
        await c.execute("UPDATE egress_audit SET id = 3 WHERE id = 4");
        await c.execute("UPDATE egress_audit SET id = 4 WHERE id = -1");
      }),
      "reordered",
    );
    // Edit row 3 and recompute every link after it the way the chain was built before keys.
    assertProblem(
      await tampered(async (c) => {
        let prevHash = "";
        for (const row of await rows(c)) {
          if (row.id < 3) {
            prevHash = row.hash;
            continue;
          }
          const edited = { ...row, bytesOut: row.id === 3 ? 1 : row.bytesOut, prevHash };
          const hash = rowHash(prevHash, edited);
          await c.execute({
            sql: "UPDATE egress_audit SET bytes_out = ?, prev_hash = ?, hash = ? WHERE id = ?",
            args: [edited.bytesOut, prevHash, hash, row.id],
          });
          prevHash = hash;
        }
      }),
      "recomputed",
    );
    // Append a row that chains onto the newest one, with a MAC made under a guessed key.
    const forged = await tampered(async (c) => {
      const newest = (await rows(c)).at(-1)!;
      const row = { ...newest, id: newest.id + 1, tsMs: newest.tsMs + 1, destination: "203.0.113.9:443" };
      await c.execute({
        sql:
          `INSERT INTO egress_audit (id, ts_ms, destination, purpose, bytes_out, bytes_in, outcome, error, prev_hash, hash)
              VALUES (?, ?, ?, ?, ?, ?, ?, NULL, ?, ?)`,
        args: [
          row.id,
          row.tsMs,
          row.destination,
          row.purpose,
          row.bytesOut,
          row.bytesIn,
          row.outcome,
          newest.hash,
          rowHash(newest.hash, row),
        ],
      });
    });
    assertProblem(forged, "forged");
    assert.equal(forged.report.firstBadId, last + 1);
    assertProblem(await tampered((c) => c.execute("DROP TABLE egress_audit")), "table_missing");
    assertProblem(await tampered((_, copy) => Deno.remove(join(copy, "audit-head.json"))), "head_missing");
    assertProblem(await tampered((_, copy) => Deno.remove(join(copy, "keys", "audit.key"))), "key_missing");
    assertProblem(
      await tampered((_, copy) => Deno.writeTextFile(join(copy, "keys", "audit.key"), "0".repeat(64))),
      "key_wrong",
    );
    assertProblem(
      await tampered(async (_, copy) => {
        const path = join(copy, "audit-head.json");
        const forgedHead = { ...JSON.parse(await Deno.readTextFile(path)), lastId: last - 2 };
        await Deno.writeTextFile(path, JSON.stringify(forgedHead));
      }),
      "head_invalid",
    );
    const noDatabase = await audit(manifest, join(dir, "nowhere"), ["verify"]);
    assertProblem(noDatabase, "database_missing");

    // The untouched log still verifies after all of that.
    assert.equal((await audit(manifest, dataDir, ["verify"])).code, 0);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("audit export writes a file that audit verify --file checks; an edited export fails", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const { manifest, dataDir } = await writtenLog(dir);
    const out = join(dataDir, "archive.jsonl");
    const exported = await audit(manifest, dataDir, ["export", "--out", out]);
    assert.equal(exported.code, 0, exported.stderr);
    const text = await Deno.readTextFile(out);
    const lines = text.trim().split("\n").map((line) => JSON.parse(line));
    assert.equal(lines[0].format, "outpost-audit-export");
    assert.ok(lines[0].head.mac);
    assert.ok(lines.filter((line) => line.row).length >= 6);

    const verified = await audit(manifest, dataDir, ["verify", "--file", out]);
    assert.equal(verified.code, 0, verified.stdout + verified.stderr);
    assert.equal(verified.report.rows, lines.filter((line) => line.row).length);

    // To standard output (the process may write only under its data dir) and back from standard input.
    const piped = await audit(manifest, dataDir, ["export", "--out", "-"]);
    assert.equal(piped.code, 0, piped.stderr);
    assert.equal((await audit(manifest, dataDir, ["verify", "--file", "-"], piped.stdout)).code, 0);

    const outside = await audit(manifest, dataDir, ["export", "--out", join(dir, "outside.jsonl")]);
    assert.equal(outside.code, 1);
    assert.match(outside.stderr, /use --out -/);

    const edited = lines.map((line) => line.row?.id === 2 ? { row: { ...line.row, bytesOut: 0 } } : line);
    await Deno.writeTextFile(out, edited.map((line) => JSON.stringify(line)).join("\n") + "\n");
    assertProblem(await audit(manifest, dataDir, ["verify", "--file", out]), "edited");
    const truncated = lines.slice(0, -2);
    await Deno.writeTextFile(out, truncated.map((line) => JSON.stringify(line)).join("\n") + "\n");
    assertProblem(await audit(manifest, dataDir, ["verify", "--file", out]), "truncated");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a log written before keys verifies as legacy rows, and the keyed chain carries on from it", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const { manifest, dataDir } = await writtenLog(dir);
    // Make it a log an older version wrote: unkeyed links, no head, no key, schema 7.
    await withClient(dataDir, async (c) => {
      let prevHash = "0".repeat(64);
      for (const row of await rows(c)) {
        const hash = rowHash(prevHash, row);
        await c.execute({
          sql: "UPDATE egress_audit SET prev_hash = ?, hash = ? WHERE id = ?",
          args: [prevHash, hash, row.id],
        });
        prevHash = hash;
      }
      await c.execute("DELETE FROM schema_migrations WHERE version = 8");
      await c.execute("ALTER TABLE audit_checkpoints DROP COLUMN mac");
    });
    await Deno.remove(join(dataDir, "audit-head.json"));
    await Deno.remove(join(dataDir, "keys"), { recursive: true });
    const before = await audit(manifest, dataDir, ["verify"]);
    assert.equal(before.report.problem, "key_missing");
    const legacyRows = (await withClient(dataDir, rows)).length;

    // The new version takes the log over and appends keyed rows after it.
    const collector = await Collector.create();
    try {
      // Same data dir, a new collector.
      await writeManifest(dir, {
        egressAllowed: [collector.destination],
        forwarding: ["raw: true", "batchSize: 1", `http: { url: "${collector.url}" }`],
        logLevel: "warn",
      });
      const outpost = await startOutpost(manifest);
      const response = await postJson(`${outpost.url}/v1/readings`, {
        device: "d",
        ts: 1_763_900_000_000,
        values: { a: 1 },
      });
      await response.body?.cancel();
      await eventually(() => collector.items().length, (count) => count >= 1);
      assert.equal(await outpost.stop(), 0);
    } finally {
      await collector.stop();
    }
    const after = await audit(manifest, dataDir, ["verify"]);
    assert.equal(after.code, 0, after.stdout);
    assert.equal(after.report.legacyRows, legacyRows);
    assert.ok((after.report.rows as number) > legacyRows);

    // Rewriting a legacy row (and every unkeyed link after it) breaks the first keyed row's link.
    await withClient(dataDir, async (c) => {
      let prevHash = "0".repeat(64);
      for (const row of (await rows(c)).filter((each) => each.id <= legacyRows)) {
        const edited = { ...row, bytesOut: row.id === 2 ? 1 : row.bytesOut, prevHash };
        const hash = rowHash(prevHash, edited);
        await c.execute({
          sql: "UPDATE egress_audit SET bytes_out = ?, prev_hash = ?, hash = ? WHERE id = ?",
          args: [edited.bytesOut, prevHash, hash, row.id],
        });
        prevHash = hash;
      }
    });
    assertProblem(await audit(manifest, dataDir, ["verify"]), "recomputed");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
