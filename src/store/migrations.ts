/**
 * Schema migrations, applied in order and recorded in `schema_migrations`.
 *
 * Rule: migrations only add (tables, nullable columns, indexes). An older binary opens a newer
 * database and keeps working on the columns it knows, so rolling the binary back never loses
 * buffered data.
 */
export interface Migration {
  readonly version: number;
  readonly description: string;
  readonly statements: readonly string[];
}

export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    description: "readings and dead letters",
    statements: [
      `CREATE TABLE readings (
        id INTEGER PRIMARY KEY,
        device TEXT NOT NULL,
        ts INTEGER NOT NULL,
        values_json TEXT NOT NULL,
        source TEXT NOT NULL,
        received_ms INTEGER NOT NULL,
        score REAL,
        anomaly INTEGER
      )`,
      "CREATE UNIQUE INDEX readings_device_ts ON readings(device, ts)",
      `CREATE TABLE dead_letters (
        id INTEGER PRIMARY KEY,
        received_ms INTEGER NOT NULL,
        source TEXT NOT NULL,
        topic TEXT,
        reason TEXT NOT NULL,
        payload BLOB NOT NULL
      )`,
    ],
  },
];

export const SCHEMA_VERSION = MIGRATIONS[MIGRATIONS.length - 1].version;
