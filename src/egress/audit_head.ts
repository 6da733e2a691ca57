/**
 * The audit log's head checkpoint, kept outside the database (`<dataDir>/audit-head.json`) and
 * signed with the audit key: the last id and hash the log reached. Rows deleted from the end,
 * a table emptied, or a chain recomputed to a different tip no longer match it.
 *
 * Rules it keeps:
 * - It is written after the row it names is committed, never before: a crash between the two
 *   leaves the head one row behind, and a row past the head with a valid MAC is authentic (only
 *   the key holder can make one). So the head never claims a row the database may not have.
 * - It is replaced atomically (temp file, fsync, rename): a reader sees the old or the new head.
 * - It is written on every append, so no row can be dropped from the end unnoticed; the one
 *   exception is an attacker who kept an older signed copy of this file and puts it back
 *   together with a log cut to match (a rollback): only an off-device export catches that.
 */
import { join } from "node:path";
import type { AuditKey } from "./audit_key.ts";

export const HEAD_FILE = "audit-head.json";
const HEAD_DOMAIN = "outpost-audit-head/2";

export interface AuditHeadFields {
  /** The newest row's id: ids are dense from 1, so also the count of rows ever appended. */
  lastId: number;
  lastHash: string;
  /** The first id chained with the key; rows before it were written unkeyed (legacy SHA-256). */
  keyedFrom: number;
  /** Times the head was found missing and written again, with the id the log had then. */
  resealed: { atId: number; ms: number }[];
  updatedMs: number;
}

export interface AuditHead extends AuditHeadFields {
  version: 2;
  keyId: string;
  mac: string;
}

export type HeadRead =
  | { state: "missing" }
  | { state: "unreadable"; error: string }
  | { state: "read"; head: AuditHead; macValid: boolean };

export function headPath(dataDir: string): string {
  return join(dataDir, HEAD_FILE);
}

export function headMac(key: AuditKey, fields: AuditHeadFields): Promise<string> {
  return key.mac(
    HEAD_DOMAIN,
    JSON.stringify([fields.lastId, fields.lastHash, fields.keyedFrom, fields.resealed, fields.updatedMs]),
  );
}

export async function signHead(key: AuditKey, fields: AuditHeadFields): Promise<AuditHead> {
  return { version: 2, ...fields, keyId: key.id, mac: await headMac(key, fields) };
}

/** Parses and checks a head (from the file or from an export). */
export async function checkHead(value: unknown, key: AuditKey): Promise<HeadRead> {
  const head = value as Partial<AuditHead> | null;
  if (
    !head || head.version !== 2 || !Number.isSafeInteger(head.lastId) || typeof head.lastHash !== "string" ||
    !Number.isSafeInteger(head.keyedFrom) || !Array.isArray(head.resealed) || typeof head.mac !== "string"
  ) {
    return { state: "unreadable", error: "not an audit head (version 2)" };
  }
  const full = head as AuditHead;
  return { state: "read", head: full, macValid: (await headMac(key, full)) === full.mac };
}

export async function readHead(path: string, key: AuditKey): Promise<HeadRead> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return { state: "missing" };
    return { state: "unreadable", error: (error as Error).message };
  }
  try {
    return await checkHead(JSON.parse(text), key);
  } catch (error) {
    return { state: "unreadable", error: (error as Error).message };
  }
}

/** Signs and atomically replaces the head file. */
export async function writeHead(path: string, key: AuditKey, fields: AuditHeadFields): Promise<AuditHead> {
  const head = await signHead(key, fields);
  const temporary = `${path}.tmp`;
  const file = await Deno.open(temporary, { write: true, create: true, truncate: true, mode: 0o600 });
  try {
    const bytes = new TextEncoder().encode(JSON.stringify(head) + "\n");
    for (let written = 0; written < bytes.length;) written += await file.write(bytes.subarray(written));
    await file.syncData();
  } finally {
    file.close();
  }
  await Deno.rename(temporary, path);
  return head;
}
