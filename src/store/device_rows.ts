/**
 * Storage of each device's detection state (`devices`), as the scorer last committed it, and the
 * queries behind the `GET /v1/devices` listing. The scorer upserts rows with statements that
 * commit with its pass (src/detect/device_states.ts keeps the in-memory copy).
 */
import type { Client, InStatement } from "@libsql/client";

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
}

const UPSERT =
  `INSERT INTO devices (device, state, calibration_after_id, readings, last_reading_id, anomaly, open_event_id, updated_ms)
  VALUES (?, ?, ?, ?, ?, ?, ?, ?)
  ON CONFLICT (device) DO UPDATE SET state = excluded.state, calibration_after_id = excluded.calibration_after_id,
    readings = excluded.readings, last_reading_id = excluded.last_reading_id, anomaly = excluded.anomaly,
    open_event_id = excluded.open_event_id, updated_ms = excluded.updated_ms`;

const SET_STATE = `INSERT INTO devices (device, state, calibration_after_id, updated_ms) VALUES (?, ?, ?, ?)
  ON CONFLICT (device) DO UPDATE SET state = excluded.state, calibration_after_id = excluded.calibration_after_id,
    updated_ms = excluded.updated_ms`;

/** Upserts that store the devices' rows whole. */
export function upsertDeviceStatements(devices: Iterable<StoredDevice>, nowMs: number): InStatement[] {
  return [...devices].map((device) => ({
    sql: UPSERT,
    args: [
      device.device,
      device.state,
      device.calibrationAfterId,
      device.readings,
      device.lastReadingId,
      device.anomaly ? 1 : 0,
      device.openEventId,
      nowMs,
    ],
  }));
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

/** Up to `limit` devices after `after` (from the first when null), in name order. */
export async function devicesAfter(
  client: Client,
  after: string | null,
  limit: number,
): Promise<Omit<StoredDevice, "lastReadingId" | "openEventId">[]> {
  const columns = "SELECT device, state, calibration_after_id, readings, anomaly FROM devices";
  const result = await client.execute(
    after === null
      ? { sql: `${columns} ORDER BY device LIMIT ?`, args: [limit] }
      : { sql: `${columns} WHERE device > ? ORDER BY device LIMIT ?`, args: [after, limit] },
  );
  return result.rows.map((row) => ({
    device: String(row.device),
    state: String(row.state) as DeviceStateName,
    calibrationAfterId: Number(row.calibration_after_id),
    readings: Number(row.readings),
    anomaly: Number(row.anomaly) === 1,
  }));
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

function placeholders(values: readonly unknown[]): string {
  return values.map(() => "?").join(",");
}
