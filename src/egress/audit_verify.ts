/**
 * Checks an audit log (the database, or an export of it) against the key and the signed head,
 * and names what was done to it. Never throws: every failure is a result.
 *
 * What each problem means:
 * - `edited`: a row's content does not match its MAC.
 * - `recomputed`: a row after the key took over carries an unkeyed SHA-256 link (the chain was
 *   recomputed without the key), or the chain's tip is not the one the head signed.
 * - `deleted`: ids have a gap, or rows are missing before the first one with no signed checkpoint.
 * - `reordered`: an authentic row sits at another place than the one it was written at.
 * - `truncated`: rows the head names are gone from the end.
 * - `emptied`: the head names rows and the table holds none.
 * - `forged`: a row past the head whose MAC is not the key's.
 * - `head_missing`, `head_invalid`, `head_recreated`: the head file is gone, does not verify, or
 *   was written again after it went missing (the log before that point cannot be vouched for).
 * - `key_missing`, `key_wrong`: no key, or not the key that signed the head.
 * - `table_missing`, `database_missing`, `error`: nothing to check, or the check could not run.
 */
import type { StoredAuditRow, StoredCheckpoint } from "../store/audit_table.ts";
import { checkpointMac, GENESIS_HASH, keyedRowHash, rowHash } from "./audit.ts";
import type { AuditKey } from "./audit_key.ts";
import type { HeadRead } from "./audit_head.ts";

export type AuditProblem =
  | "edited"
  | "recomputed"
  | "deleted"
  | "reordered"
  | "truncated"
  | "emptied"
  | "forged"
  | "head_missing"
  | "head_invalid"
  | "head_recreated"
  | "key_missing"
  | "key_wrong"
  | "table_missing"
  | "database_missing"
  | "error";

export type VerifyResult =
  | {
    ok: true;
    rows: number;
    /** Rows written before the key took over, checked as unkeyed links. */
    legacyRows: number;
    headHash: string;
    lastId: number;
    /** Rows past the head with valid MACs (appended since the head was read). */
    pastHead: number;
    /** No head and no keyed schema: a log written only by an older version, unkeyed. */
    legacy?: true;
  }
  | { ok: false; problem: AuditProblem; reason: string; rows: number; firstBadId?: number };

/** What verify reads: the database (audit_file.ts) or an export. */
export interface AuditSource {
  tablePresent(): Promise<boolean>;
  /** Epoch ms at which the keyed schema was applied, or null (legacy database, or an export). */
  keyedSinceMs(): Promise<number | null>;
  firstId(): Promise<number | null>;
  checkpoint(cutId: number): Promise<StoredCheckpoint | null>;
  rowsFrom(fromId: number, limit: number): Promise<StoredAuditRow[]>;
  idOfHash(hash: string): Promise<number | null>;
  /** The id of the row that links to `hash`. */
  idOfPrevHash(hash: string): Promise<number | null>;
}

const PAGE_ROWS = 1_000;

export async function verifyAudit(
  source: AuditSource,
  inputs: { key: AuditKey | null; keyError?: string; head: HeadRead },
): Promise<VerifyResult> {
  try {
    return await walk(source, inputs);
  } catch (error) {
    return { ok: false, problem: "error", reason: `Verification could not run: ${(error as Error).message}`, rows: 0 };
  }
}

async function walk(
  source: AuditSource,
  inputs: { key: AuditKey | null; keyError?: string; head: HeadRead },
): Promise<VerifyResult> {
  const fail = (problem: AuditProblem, reason: string, rows = 0, firstBadId?: number): VerifyResult => ({
    ok: false,
    problem,
    reason,
    rows,
    ...(firstBadId === undefined ? {} : { firstBadId }),
  });
  const key = inputs.key;
  if (!key) return fail("key_missing", `No audit key: ${inputs.keyError ?? "none configured"}`);
  if (!(await source.tablePresent())) return fail("table_missing", "The egress_audit table does not exist: dropped");

  const read = inputs.head;
  const keyedSchema = (await source.keyedSinceMs()) !== null;
  if (read.state === "unreadable") return fail("head_invalid", `The audit head cannot be read: ${read.error}`);
  if (read.state === "read" && read.head.keyId !== key.id) {
    return fail("key_wrong", `The head was signed by key ${read.head.keyId}; the configured key is ${key.id}`);
  }
  if (read.state === "read" && !read.macValid) return fail("head_invalid", "The audit head's MAC does not verify");
  if (read.state === "missing" && keyedSchema) {
    return fail("head_missing", "The audit head file is missing: truncation or deletion could go unseen");
  }
  const head = read.state === "read" ? read.head : null;
  // No head on a log written only by a version before keys: every row is an unkeyed link.
  const keyedFrom = head ? head.keyedFrom : Infinity;

  const firstId = await source.firstId();
  if (firstId === null) {
    if (head && head.lastId > 0) return fail("emptied", `The head names ${head.lastId} rows; the table holds none`);
    return done(0, 0, GENESIS_HASH, 0, 0, head === null);
  }
  let expectedId = 1;
  let prevHash = GENESIS_HASH;
  if (firstId > 1) {
    const checkpoint = await source.checkpoint(firstId - 1);
    const cut = `rows 1 to ${firstId - 1} are missing`;
    if (!checkpoint) return fail("deleted", `${cut} and no checkpoint marks a cut there`, 0, firstId);
    if (checkpoint.mac === null && head) {
      return fail("deleted", `${cut}; the checkpoint there is not signed`, 0, firstId);
    }
    if (checkpoint.mac !== null && checkpoint.mac !== await checkpointMac(key, checkpoint)) {
      return fail("deleted", `${cut}; the checkpoint there does not verify`, 0, firstId);
    }
    expectedId = firstId;
    prevHash = checkpoint.hash;
  }

  let rows = 0;
  let legacyRows = 0;
  let hashAtHead: string | null = head && head.lastId === expectedId - 1 ? prevHash : null;
  while (true) {
    const page = await source.rowsFrom(expectedId, PAGE_ROWS);
    for (const row of page) {
      rows++;
      const bad = (problem: AuditProblem, reason: string) => fail(problem, reason, rows, row.id);
      if (row.id !== expectedId) {
        return bad(
          "deleted",
          `Expected row ${expectedId} next, found ${row.id}: rows ${expectedId} to ${row.id - 1} missing`,
        );
      }
      const keyed = row.id >= keyedFrom;
      const pastHead = head !== null && row.id > head.lastId;
      const own = keyed ? await keyedRowHash(key, row.prevHash, row) : rowHash(row.prevHash, row);
      if (own === row.hash && row.prevHash === prevHash) {
        if (!keyed) legacyRows++;
      } else if (own === row.hash) {
        if (row.id === keyedFrom) {
          return bad(
            "recomputed",
            "The rows before the key took over were rewritten: the first keyed row's link breaks",
          );
        }
        return bad("reordered", "An authentic row does not follow its predecessor: rows moved or renumbered");
      } else if (pastHead) {
        return bad("forged", `Row ${row.id} is past the signed head (${head.lastId}) and its MAC is not the key's`);
      } else if (keyed && rowHash(row.prevHash, row) === row.hash) {
        return bad("recomputed", "The row carries an unkeyed hash where a MAC belongs: the chain was recomputed");
      } else if (await movedFrom(source, key, row, keyedFrom)) {
        return bad("reordered", "The row's MAC is valid at another position: rows moved or renumbered");
      } else {
        return bad("edited", "The row's content does not match its MAC: row edited");
      }
      prevHash = row.hash;
      if (head && row.id === head.lastId) hashAtHead = row.hash;
      expectedId++;
    }
    if (page.length < PAGE_ROWS) break;
  }
  const lastId = expectedId - 1;
  if (head) {
    if (lastId < head.lastId) {
      return fail("truncated", `The head names row ${head.lastId}; the log ends at ${lastId}`, rows, lastId + 1);
    }
    if (hashAtHead !== head.lastHash) {
      return fail("recomputed", `Row ${head.lastId}'s hash is not the one the head signed`, rows, head.lastId);
    }
    if (head.resealed.length > 0) {
      const at = head.resealed.map((each) => each.atId).join(", ");
      return fail("head_recreated", `The head went missing and was written again at row ${at}`, rows);
    }
  }
  return done(rows, legacyRows, prevHash, lastId, head ? lastId - head.lastId : 0, head === null);
}

function done(
  rows: number,
  legacyRows: number,
  headHash: string,
  lastId: number,
  pastHead: number,
  legacy: boolean,
): VerifyResult {
  return { ok: true, rows, legacyRows, headHash, lastId, pastHead, ...(legacy ? { legacy: true as const } : {}) };
}

/**
 * Whether `row` verifies at another position: right after the row whose hash it links to, or
 * right before the row that links to it (whichever of the two was not moved too).
 */
async function movedFrom(source: AuditSource, key: AuditKey, row: StoredAuditRow, keyedFrom: number) {
  const predecessor = row.prevHash === GENESIS_HASH ? 0 : await source.idOfHash(row.prevHash);
  const successor = await source.idOfPrevHash(row.hash);
  const candidates = [predecessor === null ? null : predecessor + 1, successor === null ? null : successor - 1];
  for (const id of new Set(candidates)) {
    if (id === null || id === row.id || id < 1) continue;
    const original = { ...row, id };
    const hash = id >= keyedFrom ? await keyedRowHash(key, row.prevHash, original) : rowHash(row.prevHash, original);
    if (hash === row.hash) return true;
  }
  return false;
}
