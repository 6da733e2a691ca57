import { join } from "node:path";
import { DATABASE_FILE, withDatabaseFile } from "../store/database.ts";
import { verifyAudit, type VerifyResult } from "./audit.ts";

/** Verifies the audit chain of the store in `dataDir`, read-only (a running Outpost may keep writing). */
export async function verifyAuditFile(dataDir: string): Promise<VerifyResult & { database: string }> {
  const result = await withDatabaseFile(dataDir, verifyAudit);
  return { database: join(dataDir, DATABASE_FILE), ...result };
}
