import { createClient } from "@libsql/client";
import { join } from "node:path";
import { createLogger } from "../../src/observability/log.ts";
import { type Database, openDatabase } from "../../src/store/database.ts";

export interface StoredReading {
  device: string;
  ts: number;
  values: Record<string, number>;
}

/** Reads every stored reading straight from the libSQL file (the process may still run: WAL). */
export async function storedReadings(dataDir: string): Promise<StoredReading[]> {
  const client = createClient({ url: `file:${join(dataDir, "outpost.db")}` });
  try {
    const result = await client.execute("SELECT device, ts, values_json FROM readings ORDER BY id");
    return result.rows.map((row) => ({
      device: String(row.device),
      ts: Number(row.ts),
      values: JSON.parse(String(row.values_json)),
    }));
  } finally {
    client.close();
  }
}

/** Rows of any table or query, as plain objects. */
export async function query(dataDir: string, sql: string): Promise<Record<string, unknown>[]> {
  const client = createClient({ url: `file:${join(dataDir, "outpost.db")}` });
  try {
    const result = await client.execute(sql);
    return result.rows.map((row) => Object.fromEntries(result.columns.map((column) => [column, row[column]])));
  } finally {
    client.close();
  }
}

export function readingKey(device: string, ts: number): string {
  return `${device}@${ts}`;
}

/**
 * Runs `fn` on a database opened in a fresh temp dir `dir` (the store in `dir/data`, encrypted with
 * a key in `dir/db-key` when asked), then closes it and removes the dir.
 */
export async function withTempDatabase(
  fn: (database: Database, dir: string) => Promise<void>,
  options: { encrypted?: boolean } = {},
): Promise<void> {
  const dir = await Deno.makeTempDir();
  let encryptionKey = null;
  if (options.encrypted) {
    encryptionKey = { path: join(dir, "db-key"), source: "manifest" as const };
    await Deno.writeTextFile(encryptionKey.path, "0123456789abcdef".repeat(4));
  }
  const database = await openDatabase(join(dir, "data"), createLogger("error", () => {}), { encryptionKey });
  try {
    await fn(database, dir);
  } finally {
    database.close();
    await Deno.remove(dir, { recursive: true });
  }
}
