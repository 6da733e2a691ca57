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
  {
    version: 2,
    description: "egress audit, outbox, aggregation windows, forwarding cursors",
    statements: [
      `CREATE TABLE egress_audit (
        id INTEGER PRIMARY KEY,
        ts_ms INTEGER NOT NULL,
        destination TEXT NOT NULL,
        purpose TEXT NOT NULL,
        bytes_out INTEGER NOT NULL,
        bytes_in INTEGER NOT NULL,
        outcome TEXT NOT NULL,
        error TEXT,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL
      )`,
      `CREATE TABLE outbox (
        id INTEGER PRIMARY KEY,
        priority INTEGER NOT NULL,
        kind TEXT NOT NULL,
        item_id TEXT NOT NULL UNIQUE,
        created_ms INTEGER NOT NULL,
        expires_ms INTEGER NOT NULL,
        pending_sinks INTEGER NOT NULL,
        bytes INTEGER NOT NULL,
        body TEXT NOT NULL
      )`,
      "CREATE INDEX outbox_priority ON outbox(priority, id)",
      `CREATE TABLE aggregate_windows (
        device TEXT NOT NULL,
        sensor TEXT NOT NULL,
        start_ms INTEGER NOT NULL,
        first_reading_id INTEGER NOT NULL,
        count INTEGER NOT NULL,
        min REAL NOT NULL,
        max REAL NOT NULL,
        sum REAL NOT NULL,
        last REAL NOT NULL,
        last_ts INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL,
        PRIMARY KEY (device, sensor, start_ms)
      )`,
      "CREATE TABLE device_watermarks (device TEXT PRIMARY KEY, max_ts INTEGER NOT NULL)",
      "CREATE TABLE cursors (name TEXT PRIMARY KEY, position INTEGER NOT NULL)",
    ],
  },
  {
    version: 3,
    description: "detection: devices, models, assignments, events, alerts, reading flags",
    statements: [
      "ALTER TABLE readings ADD COLUMN flags TEXT",
      `CREATE TABLE devices (
        device TEXT PRIMARY KEY,
        state TEXT NOT NULL,
        calibration_after_id INTEGER NOT NULL,
        readings INTEGER NOT NULL DEFAULT 0,
        last_reading_id INTEGER NOT NULL DEFAULT 0,
        anomaly INTEGER NOT NULL DEFAULT 0,
        open_event_id INTEGER,
        updated_ms INTEGER NOT NULL
      )`,
      `CREATE TABLE models (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        version TEXT NOT NULL,
        source TEXT NOT NULL,
        path TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        created_ms INTEGER NOT NULL
      )`,
      `CREATE TABLE model_assignments (
        scope TEXT PRIMARY KEY,
        model_id INTEGER NOT NULL,
        previous_model_id INTEGER,
        updated_ms INTEGER NOT NULL
      )`,
      `CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        device TEXT NOT NULL,
        start_ts INTEGER NOT NULL,
        end_ts INTEGER,
        peak_score REAL NOT NULL,
        model TEXT NOT NULL,
        top_sensors TEXT NOT NULL,
        readings INTEGER NOT NULL
      )`,
      "CREATE INDEX events_device_start ON events(device, start_ts)",
      `CREATE TABLE alerts (
        id INTEGER PRIMARY KEY,
        event_id INTEGER NOT NULL,
        device TEXT NOT NULL,
        state TEXT NOT NULL,
        ts INTEGER NOT NULL,
        body TEXT NOT NULL,
        published_ms INTEGER
      )`,
    ],
  },
  {
    version: 4,
    description: "device bound, retention by arrival order, the store's step-free clock",
    statements: [
      "CREATE TABLE known_devices (device TEXT PRIMARY KEY, first_seen_ms INTEGER NOT NULL)",
      "INSERT OR IGNORE INTO known_devices SELECT device, min(received_ms) FROM readings GROUP BY device",
      "CREATE INDEX readings_received ON readings(received_ms)",
      "CREATE TABLE store_clock (id INTEGER PRIMARY KEY CHECK (id = 1), clock_ms INTEGER NOT NULL, wall_ms INTEGER NOT NULL)",
    ],
  },
  {
    version: 5,
    description: "audit checkpoints left by pruning; indexes for retention of events and alerts",
    statements: [
      "CREATE TABLE audit_checkpoints (cut_id INTEGER PRIMARY KEY, cut_hash TEXT NOT NULL, created_ms INTEGER NOT NULL)",
      "CREATE INDEX events_end ON events(end_ts)",
      "CREATE INDEX alerts_ts ON alerts(ts)",
      "CREATE INDEX dead_letters_received ON dead_letters(received_ms)",
    ],
  },
  {
    version: 6,
    description: "index for a device's readings by id (calibration windows and counts, scoring history)",
    statements: ["CREATE INDEX readings_device_id ON readings(device, id)"],
  },
  {
    version: 7,
    description: "drift-robust detection: a device's adaptive baseline; why an episode ended; operator verdicts",
    statements: [
      "ALTER TABLE devices ADD COLUMN baseline_json TEXT",
      "ALTER TABLE events ADD COLUMN end_reason TEXT",
      "ALTER TABLE events ADD COLUMN verdict TEXT",
      "ALTER TABLE events ADD COLUMN verdict_ts INTEGER",
      "CREATE INDEX events_device_id ON events(device, id)",
    ],
  },
  {
    version: 8,
    description: "keyed audit log: checkpoints left by pruning carry an HMAC (the key is never stored)",
    statements: ["ALTER TABLE audit_checkpoints ADD COLUMN mac TEXT"],
  },
  {
    version: 9,
    description: "per-minute rollups of each device's sensors for charts (src/store/reading_rollups.ts)",
    statements: [
      // One row per device and minute of reading time that holds readings folded so far: how
      // many, the earliest arrival among them (retention finds the minutes it cut by it), and
      // the sensor limit when names beyond it were dropped from that minute.
      `CREATE TABLE rollup_minutes (
        device TEXT NOT NULL,
        minute INTEGER NOT NULL,
        readings INTEGER NOT NULL,
        min_received_ms INTEGER NOT NULL,
        dropped_above INTEGER,
        PRIMARY KEY (device, minute)
      ) WITHOUT ROWID`,
      "CREATE INDEX rollup_minutes_received ON rollup_minutes(min_received_ms)",
      `CREATE TABLE rollup_sensors (
        device TEXT NOT NULL,
        minute INTEGER NOT NULL,
        sensor TEXT NOT NULL,
        count INTEGER NOT NULL,
        min REAL NOT NULL,
        max REAL NOT NULL,
        PRIMARY KEY (device, minute, sensor)
      ) WITHOUT ROWID`,
    ],
  },
  {
    version: 10,
    description: "append-only history of model assignments per scope (src/store/assignment_history.ts)",
    statements: [
      // One row per change of a scope's model, written in the change's own transaction. The
      // model's name, version and hash are copied: calibrated `models` rows are pruned.
      `CREATE TABLE model_assignment_history (
        id INTEGER PRIMARY KEY,
        scope TEXT NOT NULL,
        ts_ms INTEGER NOT NULL,
        kind TEXT NOT NULL,
        model_id INTEGER,
        name TEXT,
        version TEXT,
        sha256 TEXT,
        previous_model_id INTEGER,
        reason TEXT,
        key_id TEXT
      )`,
      "CREATE INDEX model_assignment_history_scope ON model_assignment_history(scope, id)",
      "CREATE INDEX model_assignment_history_ts ON model_assignment_history(ts_ms)",
      // What a store from before this table can say: each scope's assignment as it stands.
      `INSERT INTO model_assignment_history (scope, ts_ms, kind, model_id, name, version, sha256, previous_model_id,
         reason)
       SELECT a.scope, a.updated_ms, 'recorded', a.model_id, m.name, m.version, m.sha256, a.previous_model_id,
         'the assignment when this history began (an upgrade); earlier changes were not kept'
       FROM model_assignments a LEFT JOIN models m ON m.id = a.model_id ORDER BY a.scope`,
    ],
  },
];

export const SCHEMA_VERSION = MIGRATIONS[MIGRATIONS.length - 1].version;
