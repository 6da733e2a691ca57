import { createClient } from "@libsql/client";
import { join } from "node:path";

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
