/**
 * One page of `GET /v1/devices`, in device order after a cursor: a constant number of queries
 * per page (the page, the scoring lag of its devices, the calibration progress of its calibrating
 * devices, their latest activity), never one per device.
 */
import type { Client } from "@libsql/client";
import {
  calibrationProgress,
  type DeviceActivity,
  deviceActivity,
  devicesAfter,
  readingsAfterByDevice,
} from "../store/device_rows.ts";
import type { MissingSensors } from "./device_states.ts";

export interface DeviceRow extends DeviceActivity {
  device: string;
  state: string;
  readings: number;
  anomaly: boolean;
  /** Readings committed but not yet scored, and the arrival time of the oldest of them. */
  lag: { readings: number; oldestMs: number | null };
  /** Calibration readings collected so far (calibrating devices only). */
  collected: number | null;
  /** The sensors of its model that its latest reading lacked, when there were any. */
  missing: MissingSensors | null;
}

export async function devicePage(
  client: Client,
  options: { after: string | null; limit: number; scoreCursor: number; only?: string },
): Promise<{ devices: DeviceRow[]; more: boolean }> {
  const page = await devicesAfter(client, options.after, options.limit + 1, options.only ?? null);
  const rows = page.slice(0, options.limit);
  if (rows.length === 0) return { devices: [], more: false };
  const names = rows.map((row) => row.device);
  const cursor = Math.max(options.scoreCursor, 0);
  const [lagOf, collectedOf, activityOf] = await Promise.all([
    readingsAfterByDevice(client, cursor, names),
    calibrationProgress(client, cursor, names),
    deviceActivity(client, names),
  ]);
  return {
    devices: rows.map((row) => {
      const pending = lagOf.get(row.device);
      return {
        device: row.device,
        state: row.state,
        readings: row.readings + (pending?.readings ?? 0),
        anomaly: row.anomaly,
        lag: { readings: pending?.readings ?? 0, oldestMs: pending?.oldestMs ?? null },
        collected: collectedOf.get(row.device) ?? null,
        missing: row.missingJson === null ? null : JSON.parse(row.missingJson) as MissingSensors,
        ...(activityOf.get(row.device) ?? { lastSeenTs: null, latestScore: null, openEvent: null }),
      };
    }),
    more: page.length > options.limit,
  };
}
