import { join } from "node:path";
import { createClient } from "@libsql/client";
import { DATABASE_FILE } from "../store/database.ts";
import { verifyAudit, type VerifyResult } from "./audit.ts";

/** Verifies the audit chain of the store in `dataDir`, read-only (a running Outpost may keep writing). */
export async function verifyAuditFile(dataDir: string): Promise<VerifyResult & { database: string }> {
  const database = join(dataDir, DATABASE_FILE);
  await Deno.stat(database);
  const client = createClient({ url: `file:${database}` });
  try {
    return { database, ...(await verifyAudit(client)) };
  } finally {
    client.close();
  }
}
