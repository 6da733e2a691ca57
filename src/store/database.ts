import { type Client, createClient } from "@libsql/client";
import { join } from "node:path";
import type { Logger } from "../observability/log.ts";
import { MIGRATIONS, SCHEMA_VERSION } from "./migrations.ts";

export const DATABASE_FILE = "outpost.db";

/**
 * Durability mode: WAL with `synchronous=FULL`. Every commit fsyncs the WAL before the commit
 * returns, so a reading acknowledged after its commit survives a process crash and a power loss
 * (on storage that honours fsync). See README "Durability".
 */
const CONNECTION_PRAGMAS = [
  "PRAGMA journal_mode=WAL",
  "PRAGMA synchronous=FULL",
  "PRAGMA busy_timeout=5000",
  "PRAGMA cache_size=-4096",
  "PRAGMA wal_autocheckpoint=1000",
  "PRAGMA journal_size_limit=67108864",
];

export interface Database {
  readonly client: Client;
  readonly path: string;
  readonly schemaVersion: number;
}

/** Opens (creating if needed) the libSQL file in `dataDir` and applies pending migrations. */
export async function openDatabase(dataDir: string, log: Logger): Promise<Database> {
  await Deno.mkdir(dataDir, { recursive: true });
  const path = join(dataDir, DATABASE_FILE);
  const client = createClient({ url: `file:${path}` });
  try {
    for (const pragma of CONNECTION_PRAGMAS) await client.execute(pragma);
    const schemaVersion = await migrate(client, log);
    return { client, path, schemaVersion };
  } catch (error) {
    client.close();
    throw error;
  }
}

async function migrate(client: Client, log: Logger): Promise<number> {
  await client.execute(
    "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, description TEXT NOT NULL, applied_ms INTEGER NOT NULL)",
  );
  const result = await client.execute("SELECT coalesce(max(version), 0) AS version FROM schema_migrations");
  const current = Number(result.rows[0].version);
  if (current > SCHEMA_VERSION) {
    log.warn("store.schema_newer", { databaseVersion: current, knownVersion: SCHEMA_VERSION });
    return current;
  }
  for (const migration of MIGRATIONS) {
    if (migration.version <= current) continue;
    await client.batch([
      ...migration.statements,
      {
        sql: "INSERT INTO schema_migrations (version, description, applied_ms) VALUES (?, ?, ?)",
        args: [migration.version, migration.description, Date.now()],
      },
    ], "write");
    log.info("store.migrated", { version: migration.version, description: migration.description });
  }
  return Math.max(current, SCHEMA_VERSION);
}

/** Bytes in use by live pages (free pages left by deletes are reused, so they do not count). */
export async function usedBytes(client: Client): Promise<number> {
  const result = await client.execute(
    "SELECT (page_count - freelist_count) * page_size AS used FROM pragma_page_count(), pragma_freelist_count(), pragma_page_size()",
  );
  return Number(result.rows[0].used);
}
