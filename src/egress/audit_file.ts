/**
 * The audit log offline: `audit verify` on the store in a data dir (read-only: a running Outpost
 * may keep writing), `audit export` to a file for an off-device archive, and `audit verify
 * --file` on such a file. None of them throws: every failure is a VerifyResult.
 *
 * Export format (JSON lines): a header `{"format":"outpost-audit-export","version":1,
 * "exportedMs":...,"head":{...}|null}`, then one `{"checkpoint":{...}}` per checkpoint, then one
 * `{"row":{...}}` per row, oldest first. The head is read before the rows, as verify does, so
 * rows appended meanwhile are past the head and check by their MAC.
 */
import { join } from "node:path";
import type { Client } from "@libsql/client";
import { DATABASE_FILE, type StoreLocation, withDatabaseFile } from "../store/database.ts";
import {
  auditCheckpoint,
  auditCheckpoints,
  auditIdOfHash,
  auditRowsFrom,
  auditSchema,
  firstAuditId,
  type StoredAuditRow,
  type StoredCheckpoint,
} from "../store/audit_table.ts";
import { AuditKey, type AuditKeyLocation } from "./audit_key.ts";
import { checkHead, headPath, type HeadRead, readHead } from "./audit_head.ts";
import { type AuditSource, verifyAudit, type VerifyResult } from "./audit_verify.ts";

export const EXPORT_FORMAT = "outpost-audit-export";
const EXPORT_PAGE_ROWS = 1_000;

type Located = VerifyResult & { database?: string; file?: string; keyId?: string; keySource?: string };

/** Verifies the audit log of the store at `store` with the key at `keyLocation`. */
export async function verifyAuditFile(store: StoreLocation, keyLocation: AuditKeyLocation): Promise<Located> {
  const dataDir = store.dataDir;
  const database = join(dataDir, DATABASE_FILE);
  const { key, keyError } = await loadKey(keyLocation);
  try {
    await Deno.stat(database);
  } catch (error) {
    return {
      ok: false,
      problem: "database_missing",
      reason: `No database: ${(error as Error).message}`,
      rows: 0,
      database,
    };
  }
  try {
    const head: HeadRead = key ? await readHead(headPath(dataDir), key) : { state: "missing" };
    const result = await withDatabaseFile(
      store,
      (client) => verifyAudit(databaseSource(client), { key, keyError, head }),
    );
    return { database, ...result, ...keyFields(key, keyLocation) };
  } catch (error) {
    return { ok: false, problem: "error", reason: (error as Error).message, rows: 0, database };
  }
}

/**
 * Writes the log (head, checkpoints, rows) to `out` ("-": standard output, for a process whose
 * write permission covers only its data dir); returns what it wrote.
 */
export async function exportAudit(
  store: StoreLocation,
  out: string,
): Promise<{ rows: number; checkpoints: number }> {
  const dataDir = store.dataDir;
  let head: unknown = null;
  try {
    head = JSON.parse(await Deno.readTextFile(headPath(dataDir)));
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
  await Deno.stat(join(dataDir, DATABASE_FILE));
  const file = out === "-"
    ? Deno.stdout
    : await Deno.open(out, { write: true, create: true, truncate: true, mode: 0o600 });
  const encoder = new TextEncoder();
  const write = async (value: unknown) => {
    const bytes = encoder.encode(JSON.stringify(value) + "\n");
    for (let written = 0; written < bytes.length;) written += await file.write(bytes.subarray(written));
  };
  try {
    return await withDatabaseFile(store, async (client) => {
      await write({ format: EXPORT_FORMAT, version: 1, exportedMs: Date.now(), head });
      const checkpoints = await auditCheckpoints(client);
      for (const checkpoint of checkpoints) await write({ checkpoint });
      let rows = 0;
      let from = 0;
      while (true) {
        const page = await auditRowsFrom(client, from, EXPORT_PAGE_ROWS);
        for (const row of page) await write({ row });
        rows += page.length;
        if (page.length < EXPORT_PAGE_ROWS) break;
        from = page[page.length - 1].id + 1;
      }
      if (file instanceof Deno.FsFile) await file.syncData();
      return { rows, checkpoints: checkpoints.length };
    });
  } finally {
    if (file !== Deno.stdout) file.close();
  }
}

/** Verifies an export written by `exportAudit` ("-": standard input) with the key at `keyLocation`. */
export async function verifyExportFile(path: string, keyLocation: AuditKeyLocation): Promise<Located> {
  const { key, keyError } = await loadKey(keyLocation);
  let parsed: { head: unknown; checkpoints: StoredCheckpoint[]; rows: StoredAuditRow[] };
  try {
    const text = path === "-" ? await new Response(Deno.stdin.readable).text() : await Deno.readTextFile(path);
    parsed = parseExport(text);
  } catch (error) {
    return {
      ok: false,
      problem: "error",
      reason: `Not a readable audit export: ${(error as Error).message}`,
      rows: 0,
      file: path,
    };
  }
  const head: HeadRead = parsed.head === null || !key ? { state: "missing" } : await checkHead(parsed.head, key);
  const result = await verifyAudit(exportSource(parsed), { key, keyError, head });
  return { file: path, ...result, ...keyFields(key, keyLocation) };
}

function parseExport(text: string) {
  const lines = text.split("\n").filter((line) => line !== "");
  const header = JSON.parse(lines[0] ?? "null");
  if (header?.format !== EXPORT_FORMAT || header.version !== 1) throw new Error(`no ${EXPORT_FORMAT} header`);
  const checkpoints: StoredCheckpoint[] = [];
  const rows: StoredAuditRow[] = [];
  for (const line of lines.slice(1)) {
    const item = JSON.parse(line);
    if (item.checkpoint) checkpoints.push(item.checkpoint);
    else if (item.row) rows.push(item.row);
    else throw new Error(`unknown line: ${line.slice(0, 80)}`);
  }
  rows.sort((a, b) => a.id - b.id);
  return { head: header.head, checkpoints, rows };
}

/** The live store as verify reads it (also the running program's periodic check, audit_verification.ts). */
export function databaseSource(client: Client): AuditSource {
  return {
    tablePresent: async () => (await auditSchema(client)).table,
    keyedSinceMs: async () => (await auditSchema(client)).keyedSinceMs,
    firstId: () => firstAuditId(client),
    checkpoint: (cutId) => auditCheckpoint(client, cutId),
    rowsFrom: (fromId, limit) => auditRowsFrom(client, fromId, limit),
    idOfHash: (hash) => auditIdOfHash(client, "hash", hash),
    idOfPrevHash: (hash) => auditIdOfHash(client, "prev_hash", hash),
  };
}

/** Exports are made by keyed versions only: one without a head is reported as such. */
function exportSource(parsed: { checkpoints: StoredCheckpoint[]; rows: StoredAuditRow[] }): AuditSource {
  const byHash = new Map(parsed.rows.map((row) => [row.hash, row.id]));
  const byPrevHash = new Map(parsed.rows.map((row) => [row.prevHash, row.id]));
  const indexOf = (fromId: number) => {
    let low = 0;
    let high = parsed.rows.length;
    while (low < high) {
      const middle = (low + high) >> 1;
      if (parsed.rows[middle].id < fromId) low = middle + 1;
      else high = middle;
    }
    return low;
  };
  return {
    tablePresent: () => Promise.resolve(true),
    keyedSinceMs: () => Promise.resolve(0),
    firstId: () => Promise.resolve(parsed.rows[0]?.id ?? null),
    checkpoint: (cutId) => Promise.resolve(parsed.checkpoints.find((each) => each.cutId === cutId) ?? null),
    rowsFrom: (fromId, limit) => Promise.resolve(parsed.rows.slice(indexOf(fromId), indexOf(fromId) + limit)),
    idOfHash: (hash) => Promise.resolve(byHash.get(hash) ?? null),
    idOfPrevHash: (hash) => Promise.resolve(byPrevHash.get(hash) ?? null),
  };
}

async function loadKey(location: AuditKeyLocation): Promise<{ key: AuditKey | null; keyError?: string }> {
  try {
    return { key: await AuditKey.load(location) };
  } catch (error) {
    return { key: null, keyError: `${(error as Error).message} (${location.source}: ${location.path})` };
  }
}

function keyFields(key: AuditKey | null, location: AuditKeyLocation) {
  return { keySource: `${location.source}: ${location.path}`, ...(key ? { keyId: key.id } : {}) };
}
