/**
 * One page of `GET /v1/devices`: a constant number of queries per page (the page, the scoring
 * lag of its devices, the calibration progress of its calibrating devices, their latest
 * activity), never one per device.
 *
 * In device order (the default) a page is read after its cursor by the primary key. Sorted by
 * last seen, latest score or state, every device's sort key is computed and sorted on each
 * page: one query over the `devices` table plus, for last seen and score, a constant number of
 * index seeks a device, so a page costs in proportion to `spec.limits.devices`. The cursor holds the last row's key and name, so the next page starts
 * after it in the same order: a device whose key did not change between pages is listed once;
 * one whose key changed meanwhile may be listed again or skipped. Devices without a key (never
 * seen, never scored) come last in either order; ties go by name.
 */
import type { Client } from "@libsql/client";
import {
  allDeviceNames,
  allDeviceStates,
  calibrationProgress,
  type DeviceActivity,
  deviceActivity,
  devicesAfter,
  devicesNamed,
  readingsAfterByDevice,
} from "../store/device_rows.ts";
import type { MissingSensors } from "./device_states.ts";

export const DEVICE_SORTS = ["device", "lastSeen", "score", "state"] as const;
export type DeviceSort = typeof DEVICE_SORTS[number];
export type SortOrder = "asc" | "desc";
export type SortKey = string | number | null;

/** Where a sorted page starts: after the device `device` whose key was `key`. */
export interface SortPosition {
  key: SortKey;
  device: string;
}

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
  options: {
    after: string | null;
    limit: number;
    scoreCursor: number;
    only?: string;
    sort?: { by: DeviceSort; order: SortOrder; after: SortPosition | null };
  },
): Promise<{ devices: (DeviceRow & { sortKey: SortKey })[]; more: boolean }> {
  const sort = options.sort;
  let page: Awaited<ReturnType<typeof devicesAfter>>;
  let more: boolean;
  let keyOf = (device: string): SortKey => device;
  if (sort && options.only === undefined && !(sort.by === "device" && sort.order === "asc")) {
    const sorted = await sortedDevices(client, sort, options.limit);
    const rows = new Map((await devicesNamed(client, sorted.devices.map((d) => d.device))).map((r) => [r.device, r]));
    page = sorted.devices.flatMap((d) => rows.get(d.device) ?? []);
    const keys = new Map(sorted.devices.map((d) => [d.device, d.key]));
    keyOf = (device) => keys.get(device) ?? null;
    more = sorted.more;
  } else {
    const after = sort?.after ? sort.after.device : options.after;
    const read = await devicesAfter(client, after, options.limit + 1, options.only ?? null);
    page = read.slice(0, options.limit);
    more = read.length > options.limit;
  }
  if (page.length === 0) return { devices: [], more: false };
  const names = page.map((row) => row.device);
  const cursor = Math.max(options.scoreCursor, 0);
  const [lagOf, collectedOf, activityOf] = await Promise.all([
    readingsAfterByDevice(client, cursor, names),
    calibrationProgress(client, cursor, names),
    deviceActivity(client, names),
  ]);
  return {
    devices: page.map((row) => {
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
        sortKey: keyOf(row.device),
      };
    }),
    more,
  };
}

/** Devices whose activity one query reads when sorting by it. */
const ACTIVITY_SLICE = 500;

/** The `limit` devices after `sort.after` in the sort's order, with their keys. */
async function sortedDevices(
  client: Client,
  sort: { by: DeviceSort; order: SortOrder; after: SortPosition | null },
  limit: number,
): Promise<{ devices: SortPosition[]; more: boolean }> {
  let keyed: SortPosition[];
  if (sort.by === "state") {
    keyed = (await allDeviceStates(client)).map((row) => ({ device: row.device, key: row.state }));
  } else if (sort.by === "device") {
    keyed = (await allDeviceNames(client)).map((device) => ({ device, key: device }));
  } else {
    const names = await allDeviceNames(client);
    // In slices: one bound parameter a device, and SQLite refuses a statement past 32,766.
    const activity = new Map<string, DeviceActivity>();
    for (let start = 0; start < names.length; start += ACTIVITY_SLICE) {
      for (const entry of await deviceActivity(client, names.slice(start, start + ACTIVITY_SLICE))) {
        activity.set(...entry);
      }
    }
    keyed = names.map((device) => {
      const of = activity.get(device);
      return { device, key: (sort.by === "lastSeen" ? of?.lastSeenTs : of?.latestScore?.score) ?? null };
    });
  }
  const compare = (a: SortPosition, b: SortPosition) => compareKeys(a, b, sort.order);
  keyed.sort(compare);
  const after = sort.after;
  const start = after === null ? 0 : keyed.findIndex((each) => compare(each, after) > 0);
  const from = start === -1 ? keyed.length : start;
  return { devices: keyed.slice(from, from + limit), more: keyed.length > from + limit };
}

/** Order of two positions: keys in `order` with null keys last, then names ascending. */
export function compareKeys(a: SortPosition, b: SortPosition, order: SortOrder): number {
  if (a.key !== b.key) {
    if (a.key === null) return 1;
    if (b.key === null) return -1;
    const byKey = a.key < b.key ? -1 : a.key > b.key ? 1 : 0;
    if (byKey !== 0) return order === "asc" ? byKey : -byKey;
  }
  return a.device < b.device ? -1 : a.device > b.device ? 1 : 0;
}
