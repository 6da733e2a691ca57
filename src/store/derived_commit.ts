import type { Client, InStatement, ResultSet } from "@libsql/client";

/**
 * Commits derived data (scores, aggregates, cursors) without waiting for an fsync: in WAL mode
 * with `synchronous=NORMAL` the commit is durable against a process crash, and the next
 * fsync'd commit of readings (or a checkpoint) makes it durable against power loss. A power cut
 * can undo the last derived commits together with the cursor that covers them, so the work is
 * simply done again; no reading is affected. Ingest commits stay `synchronous=FULL`.
 */
export async function commitDerived(client: Client, statements: InStatement[]): Promise<ResultSet[]> {
  await client.execute("PRAGMA synchronous=NORMAL");
  try {
    return await client.batch(statements, "write");
  } finally {
    await client.execute("PRAGMA synchronous=FULL");
  }
}
