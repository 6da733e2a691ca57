import type { Client, InStatement } from "@libsql/client";

/**
 * Named positions in `readings` (by row id) for the components that read behind the writer:
 * the scorer (`score`), the aggregator (`aggregate`) and each raw-reading sink (`raw:<sink>`).
 */
export async function readCursor(client: Client, name: string): Promise<number> {
  const result = await client.execute({ sql: "SELECT position FROM cursors WHERE name = ?", args: [name] });
  return result.rows.length === 0 ? 0 : Number(result.rows[0].position);
}

/** The statement that moves a cursor, to commit together with the work it covers. */
export function cursorStatement(name: string, position: number): InStatement {
  return {
    sql:
      "INSERT INTO cursors (name, position) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET position = excluded.position",
    args: [name, position],
  };
}

/** Moves a cursor on its own (when no other work commits with it). */
export async function moveCursor(client: Client, name: string, position: number): Promise<void> {
  await client.execute(cursorStatement(name, position));
}
