import type { Client, InStatement, ResultSet } from "@libsql/client";

/**
 * Commits derived data (scores, aggregates, cursors, model activations) in one transaction on the
 * derived-data connection (`synchronous=NORMAL`, see src/store/database.ts): durable against a
 * process crash at once, against power loss at the next fsync; the cursor commits with the work
 * it covers, so a power cut only makes the work run again.
 */
export function commitDerived(client: Client, statements: InStatement[]): Promise<ResultSet[]> {
  return client.batch(statements, "write");
}
