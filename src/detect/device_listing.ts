/**
 * One page of `GET /v1/devices`, in device order after a cursor: a constant number of queries
 * per page (the page, the scoring lag of its devices, the calibration progress of its calibrating
 * devices), never one per device.
 */
import type { Client } from "@libsql/client";

export interface DeviceRow {
  device: string;
  state: string;
  readings: number;
  anomaly: boolean;
  /** Readings committed but not yet scored, and the arrival time of the oldest of them. */
  lag: { readings: number; oldestMs: number | null };
  /** Calibration readings collected so far (calibrating devices only). */
  collected: number | null;
}

export async function devicePage(
  client: Client,
  options: { after: string | null; limit: number; scoreCursor: number },
): Promise<{ devices: DeviceRow[]; more: boolean }> {
  const columns = "SELECT device, state, calibration_after_id, readings, anomaly FROM devices";
  const page = await client.execute(
    options.after === null
      ? { sql: `${columns} ORDER BY device LIMIT ?`, args: [options.limit + 1] }
      : { sql: `${columns} WHERE device > ? ORDER BY device LIMIT ?`, args: [options.after, options.limit + 1] },
  );
  const rows = page.rows.slice(0, options.limit);
  if (rows.length === 0) return { devices: [], more: false };
  const names = rows.map((row) => String(row.device));
  const placeholders = names.map(() => "?").join(",");
  const cursor = Math.max(options.scoreCursor, 0);
  const [lag, calibration] = await Promise.all([
    // `+device` keeps SQLite on the rowid range after the cursor (the unscored tail), not the device index.
    client.execute({
      sql: `SELECT device, count(*) AS n, min(received_ms) AS oldest FROM readings
            WHERE id > ? AND +device IN (${placeholders}) GROUP BY device`,
      args: [cursor, ...names],
    }),
    client.execute({
      sql: `SELECT d.device, (SELECT count(*) FROM readings r
              WHERE r.device = d.device AND r.id > d.calibration_after_id AND r.id <= ?) AS n
            FROM devices d WHERE d.state = 'calibrating' AND d.device IN (${placeholders})`,
      args: [cursor, ...names],
    }),
  ]);
  const lagOf = new Map(lag.rows.map((row) => [String(row.device), { n: Number(row.n), oldest: Number(row.oldest) }]));
  const collectedOf = new Map(calibration.rows.map((row) => [String(row.device), Number(row.n)]));
  return {
    devices: rows.map((row) => {
      const device = String(row.device);
      const pending = lagOf.get(device);
      return {
        device,
        state: String(row.state),
        readings: Number(row.readings) + (pending?.n ?? 0),
        anomaly: Number(row.anomaly) === 1,
        lag: { readings: pending?.n ?? 0, oldestMs: pending?.oldest ?? null },
        collected: collectedOf.get(device) ?? null,
      };
    }),
    more: page.rows.length > options.limit,
  };
}
