/**
 * The cost of encryption at rest (`spec.storage.encryption`): ingest throughput with and without
 * it, measured in the same run and interleaved (plaintext, encrypted, plaintext, ...) so that load
 * from elsewhere on the machine falls on both: the raw libSQL ceiling, and HTTP batched and
 * single-reading ingest through the real program under its derived flags (detection off, as in
 * the ingest benchmark). Each figure is the median of the rounds.
 *
 * Alone: deno run --allow-read --allow-write --allow-run --allow-net=127.0.0.1,127.0.0.2
 *   --allow-env --allow-sys --allow-ffi tests/bench/encryption_bench.ts [--quick]
 */
import { join } from "node:path";
import { parseArgs } from "node:util";
import { createLogger } from "../../src/observability/log.ts";
import { openDatabase } from "../../src/store/database.ts";
import { startOutpost, writeManifest } from "../helpers/outpost_process.ts";
import { httpLoad, rawInsertRate } from "./ingest_bench.ts";

export interface EncryptionBenchOptions {
  /** Seconds each HTTP load phase runs. */
  seconds: number;
  /** Rows for each raw ceiling measurement. */
  rawRows: number;
  /** Plaintext/encrypted pairs measured. */
  rounds: number;
}

async function writeKey(dir: string): Promise<string> {
  const path = join(dir, "db-key");
  const bytes = crypto.getRandomValues(new Uint8Array(32));
  await Deno.writeTextFile(path, Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("") + "\n");
  return path;
}

/** Raw inserts (ingest_bench.ts) through the ingest connection of a store opened as Outpost opens it. */
async function rawRate(rows: number, encrypted: boolean): Promise<number> {
  const dir = await Deno.makeTempDir();
  const encryptionKey = encrypted ? { path: await writeKey(dir), source: "manifest" as const } : null;
  const database = await openDatabase(join(dir, "data"), createLogger("error", () => {}), { encryptionKey });
  const rate = await rawInsertRate(database.ingest, rows);
  database.close();
  await Deno.remove(dir, { recursive: true });
  return rate;
}

async function httpRates(seconds: number, encrypted: boolean): Promise<{ batched: number; single: number }> {
  const dir = await Deno.makeTempDir();
  const manifest = await writeManifest(dir, { logLevel: "warn", detection: ["enabled: false"] });
  if (encrypted) {
    const text = await Deno.readTextFile(manifest);
    const line = `    encryption: { enabled: true, keyFile: ${await writeKey(dir)} }\n`;
    await Deno.writeTextFile(manifest, text.replace(/( {4}maxSizeMB: .*\n)/, `$1${line}`));
  }
  const outpost = await startOutpost(manifest);
  try {
    const batched = await httpLoad(outpost.url, seconds, 100, 4, "batch");
    const single = await httpLoad(outpost.url, seconds, 1, 32, "single");
    if (batched.failed + single.failed > 0) throw new Error(`${batched.failed + single.failed} requests failed`);
    return { batched: batched.rate, single: single.rate };
  } finally {
    await outpost.stop();
    await Deno.remove(dir, { recursive: true });
  }
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
}

export async function benchEncryption(options: EncryptionBenchOptions): Promise<void> {
  const results = {
    raw: { plain: [] as number[], encrypted: [] as number[] },
    batched: { plain: [] as number[], encrypted: [] as number[] },
    single: { plain: [] as number[], encrypted: [] as number[] },
  };
  for (let round = 0; round < options.rounds; round++) {
    for (const encrypted of round % 2 === 0 ? [false, true] : [true, false]) {
      const side = encrypted ? "encrypted" : "plain";
      results.raw[side].push(await rawRate(options.rawRows, encrypted));
      const http = await httpRates(options.seconds, encrypted);
      results.batched[side].push(http.batched);
      results.single[side].push(http.single);
    }
  }
  const rows: [string, string, keyof typeof results][] = [
    ["raw libSQL INSERT (ingest conn.)", "rows/s", "raw"],
    ["HTTP batched (100 x 8 values)", "readings/s", "batched"],
    ["HTTP single-reading requests", "readings/s", "single"],
  ];
  const format = (value: number) => Math.round(value).toLocaleString("en").padStart(9);
  console.log(`${"".padEnd(32)}${"plaintext".padStart(9)}  ${"encrypted".padStart(9)}  encrypted/plaintext`);
  for (const [label, unit, key] of rows) {
    const plain = median(results[key].plain);
    const encrypted = median(results[key].encrypted);
    console.log(
      `${label.padEnd(32)}${format(plain)}  ${format(encrypted)}  ${((encrypted / plain) * 100).toFixed(0)}% ${unit} ` +
        `(median of ${options.rounds}; each round: plain ${
          results[key].plain.map((v) => Math.round(v)).join(", ")
        }; encrypted ${results[key].encrypted.map((v) => Math.round(v)).join(", ")})`,
    );
  }
}

if (import.meta.main) {
  const { values } = parseArgs({ args: Deno.args, options: { quick: { type: "boolean" } } });
  console.log(
    `# Encryption at rest: ingest with and without, Deno ${Deno.version.deno}, ${navigator.hardwareConcurrency} cores`,
  );
  await benchEncryption(
    values.quick ? { seconds: 1, rawRows: 20_000, rounds: 1 } : { seconds: 5, rawRows: 100_000, rounds: 3 },
  );
}
