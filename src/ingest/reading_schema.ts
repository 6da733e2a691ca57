import { z } from "zod";
import { formatIssuePath } from "../zod_issue.ts";

/** A validated reading, ready for the store. `ts` is epoch milliseconds. */
export interface Reading {
  readonly device: string;
  readonly ts: number;
  readonly values: Readonly<Record<string, number>>;
}

/** One problem in a request or message body, with the path of the offending field. */
export interface InputIssue {
  path: string;
  message: string;
}

export type ParseResult = { ok: true; readings: Reading[] } | { ok: false; issues: InputIssue[] };

const NAME_MAX = 128;
const RFC3339 = /^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:[Zz]|[+-]\d{2}:\d{2})$/;
/** Epoch milliseconds below this (March 1973) are almost certainly seconds. */
const MIN_EPOCH_MS = 100_000_000_000;
const MAX_EPOCH_MS = 8_640_000_000_000_000;

const name = (what: string) =>
  z.string().min(1, `${what} must not be empty`).max(NAME_MAX, `${what} is longer than ${NAME_MAX} characters`);

const timestamp = z.union([
  z.string().regex(RFC3339, "must be an RFC 3339 time such as 2026-11-22T10:00:00.000Z").refine(
    (value) => Number.isFinite(Date.parse(value.replace(" ", "T"))),
    "is not a valid calendar time",
  ),
  z.number().int("epoch milliseconds must be an integer").min(
    MIN_EPOCH_MS,
    "epoch milliseconds expected (this looks like seconds)",
  ).max(MAX_EPOCH_MS, "is beyond the largest valid time"),
], { error: "must be an RFC 3339 string or epoch milliseconds" });

const values = z.record(name("sensor name"), z.number({ error: "must be a finite number" }).finite())
  .refine((record) => Object.keys(record).length > 0, "must hold at least one sensor value");

function readingSchema(deviceRequired: boolean) {
  return z.object({
    device: deviceRequired ? name("device") : name("device").optional(),
    ts: timestamp,
    values,
  }).strict();
}

const singleWithDevice = readingSchema(true);
const singleWithoutDevice = readingSchema(false);
const batchWithDevice = z.object({ readings: z.array(singleWithDevice).min(1, "must hold at least one reading") })
  .strict();
const batchWithoutDevice = z.object({ readings: z.array(singleWithoutDevice).min(1, "must hold at least one reading") })
  .strict();

/**
 * Validates a decoded JSON body: `{"readings":[...]}` or a single reading object.
 * `defaultDevice` (from an MQTT topic) fills in readings that name no device; a reading that
 * names another device is refused.
 */
export function parseReadings(body: unknown, defaultDevice?: string): ParseResult {
  if (typeof body !== "object" || body === null || Array.isArray(body)) {
    return {
      ok: false,
      issues: [{ path: "(body)", message: 'must be a JSON object: a reading or {"readings":[...]}' }],
    };
  }
  const isBatch = "readings" in body;
  const schema = isBatch
    ? (defaultDevice === undefined ? batchWithDevice : batchWithoutDevice)
    : (defaultDevice === undefined ? singleWithDevice : singleWithoutDevice);
  const result = schema.safeParse(body);
  if (!result.success) return { ok: false, issues: result.error.issues.map(toInputIssue) };
  const raw = isBatch ? (result.data as { readings: RawReading[] }).readings : [result.data as RawReading];
  const issues: InputIssue[] = [];
  const readings = raw.map((reading, index) => {
    const device = reading.device ?? defaultDevice!;
    if (defaultDevice !== undefined && device !== defaultDevice) {
      issues.push({
        path: isBatch ? `readings[${index}].device` : "device",
        message: `${JSON.stringify(device)} does not match the topic's device ${JSON.stringify(defaultDevice)}`,
      });
    }
    return { device, ts: toEpochMs(reading.ts), values: reading.values };
  });
  return issues.length > 0 ? { ok: false, issues } : { ok: true, readings };
}

interface RawReading {
  device?: string;
  ts: string | number;
  values: Record<string, number>;
}

function toEpochMs(ts: string | number): number {
  return typeof ts === "number" ? ts : Date.parse(ts.replace(" ", "T"));
}

function toInputIssue(issue: z.core.$ZodIssue): InputIssue {
  return { path: formatIssuePath(issue.path, "(body)"), message: issue.message };
}
