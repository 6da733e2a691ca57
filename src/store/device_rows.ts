/**
 * Storage of each device's detection state (`devices`), as the scorer last committed it, and the
 * queries behind the `GET /v1/devices` listing. The scorer upserts rows with statements that
 * commit with its pass (src/detect/device_states.ts keeps the in-memory copy).
 */
import type { Client, InStatement, Row } from "@libsql/client";

export type DeviceStateName = "calibrating" | "active" | "quarantined";

/** A `devices` row. */
export interface StoredDevice {
  device: string;
  state: DeviceStateName;
  /** Readings with a higher id count toward calibration. */
  calibrationAfterId: number;
  /** Readings scored, flagged or skipped so far. */
  readings: number;
  lastReadingId: number;
  anomaly: boolean;
  openEventId: number | null;
  /** The detector's adaptive baseline (JSON), when the device has one. */
  baselineJson?: string | null;
}

const UPSERT_COLUMNS = "device, state, calibration_after_id, readings, last_reading_id, anomaly, open_event_id, " +
  "updated_ms, baseline_json";
const UPSERT_UPDATE = `ON CONFLICT (device) DO UPDATE SET state = excluded.state,
    calibration_after_id = excluded.calibration_after_id, readings = excluded.readings,
    last_reading_id = excluded.last_reading_id, anomaly = excluded.anomaly, open_event_id = excluded.open_event_id,
    updated_ms = excluded.updated_ms, baseline_json = excluded.baseline_json`;
/** Rows per upsert statement: one statement is compiled once for a whole pass's devices. */
const DEVICES_PER_UPSERT = 100;

const SET_STATE = `INSERT INTO devices (device, state, calibration_after_id, updated_ms) VALUES (?, ?, ?, ?)
  ON CONFLICT (device) DO UPDATE SET state = excluded.state, calibration_after_id = excluded.calibration_after_id,
    updated_ms = excluded.updated_ms`;

/** Upserts that store the devices' rows whole. */
export function upsertDeviceStatements(devices: Iterable<StoredDevice>, nowMs: number): InStatement[] {
  const all = [...devices];
  const statements: InStatement[] = [];
  for (let start = 0; start < all.length; start += DEVICES_PER_UPSERT) {
    const chunk = all.slice(start, start + DEVICES_PER_UPSERT);
    statements.push({
      sql: `INSERT INTO devices (${UPSERT_COLUMNS}) VALUES ${"(?,?,?,?,?,?,?,?,?),".repeat(chunk.length).slice(0, -1)}
        ${UPSERT_UPDATE}`,
      args: chunk.flatMap((device) => [
        device.device,
        device.state,
        device.calibrationAfterId,
        device.readings,
        device.lastReadingId,
        device.anomaly ? 1 : 0,
        device.openEventId,
        nowMs,
        device.baselineJson ?? null,
      ]),
    });
  }
  return statements;
}

/**
 * Statement that counts the readings with ids in (`afterId`, `toId`] in their devices (readings
 * the scorer skipped); a device first seen here starts calibrating on the readings after `toId`.
 */
export function countSkippedReadingsStatement(afterId: number, toId: number, nowMs: number): InStatement {
  return {
    sql: `INSERT INTO devices (device, state, calibration_after_id, readings, last_reading_id, updated_ms)
          SELECT device, 'calibrating', ?, count(*), max(id), ? FROM readings WHERE id > ? AND id <= ? GROUP BY device
          ON CONFLICT (device) DO UPDATE SET readings = readings + excluded.readings,
            last_reading_id = excluded.last_reading_id, updated_ms = excluded.updated_ms`,
    args: [toId, nowMs, afterId, toId],
  };
}

export async function readDevice(client: Client, device: string): Promise<StoredDevice | null> {
  const row = (await client.execute({ sql: "SELECT * FROM devices WHERE device = ?", args: [device] })).rows[0];
  if (!row) return null;
  return {
    device,
    state: String(row.state) as DeviceStateName,
    calibrationAfterId: Number(row.calibration_after_id),
    readings: Number(row.readings),
    lastReadingId: Number(row.last_reading_id),
    anomaly: Number(row.anomaly) === 1,
    openEventId: row.open_event_id === null ? null : Number(row.open_event_id),
    baselineJson: row.baseline_json === null ? null : String(row.baseline_json),
  };
}

/** Sets a device's state and calibration start, creating its row if needed (other fields kept). */
export async function setDeviceState(
  client: Client,
  device: string,
  state: DeviceStateName,
  options: { calibrationAfterId: number; nowMs: number },
): Promise<void> {
  await client.execute({ sql: SET_STATE, args: [device, state, options.calibrationAfterId, options.nowMs] });
}

export async function quarantinedDevices(client: Client): Promise<string[]> {
  const result = await client.execute("SELECT device FROM devices WHERE state = 'quarantined'");
  return result.rows.map((row) => String(row.device));
}

/** Whether the store knows the device: a `devices` row or a reading. */
export async function deviceKnown(client: Client, device: string): Promise<boolean> {
  const result = await client.execute({
    sql: `SELECT EXISTS (SELECT 1 FROM devices WHERE device = ?1)
            OR EXISTS (SELECT 1 FROM readings WHERE device = ?1) AS known`,
    args: [device],
  });
  return Number(result.rows[0].known) === 1;
}

/**
 * Up to `limit` devices after `after` (from the first when null), in name order, each with the
 * detector's note of the sensors its latest reading lacked (`baseline_json`'s `missing`, JSON).
 */
export async function devicesAfter(
  client: Client,
  after: string | null,
  limit: number,
  only: string | null = null,
): Promise<(Omit<StoredDevice, "lastReadingId" | "openEventId"> & { missingJson: string | null })[]> {
  const columns = `SELECT device, state, calibration_after_id, readings, anomaly,
    json_extract(baseline_json, '$.missing') AS missing_json FROM devices`;
  const result = await client.execute(
    only !== null
      ? { sql: `${columns} WHERE device = ?`, args: [only] }
      : after === null
      ? { sql: `${columns} ORDER BY device LIMIT ?`, args: [limit] }
      : { sql: `${columns} WHERE device > ? ORDER BY device LIMIT ?`, args: [after, limit] },
  );
  return result.rows.map(toDeviceRow);
}

/** The rows `devicesAfter` gives, of the devices named (in no particular order). */
export async function devicesNamed(
  client: Client,
  names: readonly string[],
): Promise<Awaited<ReturnType<typeof devicesAfter>>> {
  if (names.length === 0) return [];
  const result = await client.execute({
    sql: `SELECT device, state, calibration_after_id, readings, anomaly,
            json_extract(baseline_json, '$.missing') AS missing_json FROM devices WHERE device IN (${
      placeholders(names)
    })`,
    args: [...names],
  });
  return result.rows.map(toDeviceRow);
}

/** Every device's state (at most `spec.limits.devices` rows): what sorting by state needs. */
export async function allDeviceStates(client: Client): Promise<{ device: string; state: string }[]> {
  const result = await client.execute("SELECT device, state FROM devices");
  return result.rows.map((row) => ({ device: String(row.device), state: String(row.state) }));
}

/** Every device's name. */
export async function allDeviceNames(client: Client): Promise<string[]> {
  const result = await client.execute("SELECT device FROM devices");
  return result.rows.map((row) => String(row.device));
}

/**
 * Readings of `devices` with ids above `afterId` (not yet scored when it is the score cursor):
 * how many, and the arrival time of the oldest, for the devices that have any. One query.
 */
export async function readingsAfterByDevice(
  client: Client,
  afterId: number,
  devices: readonly string[],
): Promise<Map<string, { readings: number; oldestMs: number }>> {
  const result = await client.execute({
    // `+device` keeps SQLite on the rowid range after the cursor (the unscored tail), not the device index.
    sql: `SELECT device, count(*) AS n, min(received_ms) AS oldest FROM readings
          WHERE id > ? AND +device IN (${placeholders(devices)}) GROUP BY device`,
    args: [afterId, ...devices],
  });
  return new Map(
    result.rows.map((row) => [String(row.device), { readings: Number(row.n), oldestMs: Number(row.oldest) }]),
  );
}

/**
 * For those of `devices` that are calibrating: their readings counted toward calibration up to
 * id `toId`. One query.
 */
export async function calibrationProgress(
  client: Client,
  toId: number,
  devices: readonly string[],
): Promise<Map<string, number>> {
  const result = await client.execute({
    sql: `SELECT d.device, (SELECT count(*) FROM readings r
            WHERE r.device = d.device AND r.id > d.calibration_after_id AND r.id <= ?) AS n
          FROM devices d WHERE d.state = 'calibrating' AND d.device IN (${placeholders(devices)})`,
    args: [toId, ...devices],
  });
  return new Map(result.rows.map((row) => [String(row.device), Number(row.n)]));
}

/** What `GET /v1/devices` shows of a device's latest activity. */
export interface DeviceActivity {
  /** Time of its latest reading (epoch ms), scored or not. */
  lastSeenTs: number | null;
  /** Its latest scored reading among the last `LATEST_SCORE_WINDOW` the scorer processed. */
  latestScore: { score: number; anomaly: boolean; ts: number } | null;
  /** The open event `devices.open_event_id` points at. */
  openEvent: { id: number; startTs: number; peakScore: number; topSensors: string[] } | null;
}

/**
 * How many of a device's readings, back from the last one the scorer processed, are searched for
 * its latest score: readings left unscored (a missing sensor, a deactivated model, quarantine)
 * would otherwise make the search as long as the device's history.
 */
export const LATEST_SCORE_WINDOW = 64;

/**
 * The latest activity of `devices` (those with a `devices` row). One query, a constant number of
 * index seeks a device: its latest reading time (`readings_device_ts`), its latest score within
 * the window (`readings_device_id`) and its open event (the events' primary key).
 */
export async function deviceActivity(
  client: Client,
  devices: readonly string[],
): Promise<Map<string, DeviceActivity>> {
  const result = await client.execute({
    sql: `SELECT d.device,
            (SELECT r.ts FROM readings r WHERE r.device = d.device ORDER BY r.ts DESC LIMIT 1) AS last_ts,
            s.score, s.anomaly, s.ts AS score_ts,
            e.id AS event_id, e.start_ts, e.peak_score, e.top_sensors
          FROM devices d
          LEFT JOIN readings s ON s.id = (
            SELECT r.id FROM readings r
            WHERE r.device = d.device AND r.id <= d.last_reading_id AND r.score IS NOT NULL
              AND r.id > coalesce((SELECT w.id FROM readings w WHERE w.device = d.device AND w.id <= d.last_reading_id
                ORDER BY w.id DESC LIMIT 1 OFFSET ?), 0)
            ORDER BY r.id DESC LIMIT 1)
          LEFT JOIN events e ON e.id = d.open_event_id AND e.end_ts IS NULL
          WHERE d.device IN (${placeholders(devices)})`,
    args: [LATEST_SCORE_WINDOW, ...devices],
  });
  return new Map(result.rows.map((row) => [String(row.device), {
    lastSeenTs: row.last_ts === null ? null : Number(row.last_ts),
    latestScore: row.score === null
      ? null
      : { score: Number(row.score), anomaly: Number(row.anomaly) === 1, ts: Number(row.score_ts) },
    openEvent: row.event_id === null ? null : {
      id: Number(row.event_id),
      startTs: Number(row.start_ts),
      peakScore: Number(row.peak_score),
      topSensors: JSON.parse(String(row.top_sensors)),
    },
  }]));
}

function placeholders(values: readonly unknown[]): string {
  return values.map(() => "?").join(",");
}

function toDeviceRow(row: Row) {
  return {
    device: String(row.device),
    state: String(row.state) as DeviceStateName,
    calibrationAfterId: Number(row.calibration_after_id),
    readings: Number(row.readings),
    anomaly: Number(row.anomaly) === 1,
    missingJson: row.missing_json === null ? null : String(row.missing_json),
  };
}

/** A state row of a device the store no longer knows (no reading left) that is not quarantined. */
const FORGOTTEN =
  "state != 'quarantined' AND NOT EXISTS (SELECT 1 FROM known_devices k WHERE k.device = devices.device)";

/**
 * Devices with a state row, not quarantined, but no reading left in the store (`known_devices`
 * forgot them), at most `limit`; of `among` only when given (at most 500 names).
 */
export async function forgottenDeviceRows(
  client: Client,
  among: readonly string[] | null,
  limit: number,
): Promise<string[]> {
  const only = among === null ? "" : ` AND device IN (${among.map(() => "?").join(",")})`;
  const result = await client.execute({
    sql: `SELECT device FROM devices WHERE ${FORGOTTEN}${only} ORDER BY device LIMIT ?`,
    args: [...(among ?? []), limit],
  });
  return result.rows.map((row) => String(row.device));
}

/**
 * Deletes the state rows of `devices` (at most 500 names) that the store still does not know,
 * returning the devices deleted.
 */
export function deleteForgottenDevicesStatement(devices: readonly string[]): InStatement {
  return {
    sql: `DELETE FROM devices WHERE device IN (${devices.map(() => "?").join(",")})
            AND ${FORGOTTEN} RETURNING device`,
    args: [...devices],
  };
}

/**
 * Takes any open episode off the rows of `devices` (at most 500 names) that are still there, with
 * the debouncer's stored inputs (they led to that episode).
 */
export function dropEpisodesStatement(devices: readonly string[]): InStatement {
  return {
    sql: `UPDATE devices SET open_event_id = NULL, anomaly = 0,
            baseline_json = CASE WHEN json_valid(baseline_json) THEN json_remove(baseline_json, '$.debounce')
                            ELSE baseline_json END
            WHERE open_event_id IS NOT NULL AND device IN (${devices.map(() => "?").join(",")})`,
    args: [...devices],
  };
}
