import type { LimitsConfig } from "../config/config.ts";
import { LimitExceededError, limitKey } from "../limit_exceeded_error.ts";
import { parseTimestamp } from "../timestamps.ts";
import { EARLIEST_PLAUSIBLE_MS } from "../version.ts";

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

export type ParseResult =
  | { ok: true; readings: Reading[] }
  | {
    ok: false;
    issues: InputIssue[];
    /** A bound that refuses the whole body (413). */
    limit?: LimitExceededError;
    /** Keys of bounds that single readings ran into (name length, clock skew), to count. */
    limitKeys?: string[];
  };

export type ReadingLimits =
  & Pick<LimitsConfig, "readingsPerRequest" | "sensorsPerReading" | "nameLength">
  & Partial<Pick<LimitsConfig, "maxClockSkewSeconds">>;

export type ReadingParser = (body: unknown, defaultDevice?: string) => ParseResult;

/** Issues reported at most per body; validation stops at this many. */
export const MAX_ISSUES = 100;
const NAME_LENGTH_KEY = limitKey("nameLength");
const CLOCK_SKEW_KEY = limitKey("maxClockSkewSeconds");

/** Keys that JSON can carry but a JavaScript record cannot hold unchanged. */
const RESERVED_NAMES = new Set(["__proto__"]);

/**
 * A validator for decoded JSON bodies: `{"readings":[...]}` or a single reading object.
 * `defaultDevice` (from an MQTT topic) fills in readings that name no device; a reading that
 * names another device is refused.
 *
 * Cost is bounded by the limits, not by the input: the count of readings is checked before any
 * reading is validated, each reading's count of sensors before its sensors are, and validation
 * stops at MAX_ISSUES. Ids
 * and names are kept as sent or refused: empty, longer than `nameLength`, not well-formed
 * Unicode (a lone surrogate would be stored as U+FFFD and collide) or reserved.
 */
export function readingParser(limits: ReadingLimits): ReadingParser {
  const nameProblem = nameChecker(limits.nameLength);
  return (body, defaultDevice) => {
    if (typeof body !== "object" || body === null || Array.isArray(body)) {
      return refuse("(body)", 'must be a JSON object: a reading or {"readings":[...]}');
    }
    if (defaultDevice !== undefined) {
      const problem = nameProblem(defaultDevice, "the topic's device");
      if (problem) {
        return { ok: false, issues: [{ path: "(topic)", message: problem }], limitKeys: limitKeysIn([problem]) };
      }
    }
    const isBatch = Object.hasOwn(body, "readings");
    let raw: unknown[];
    if (isBatch) {
      const extra = firstKeyBesides(body, "readings");
      if (extra !== undefined) return refuse(extra, "is not allowed beside readings");
      const readings = (body as { readings: unknown }).readings;
      if (!Array.isArray(readings)) return refuse("readings", "must be an array of readings");
      if (readings.length === 0) return refuse("readings", "must hold at least one reading");
      if (readings.length > limits.readingsPerRequest) {
        return tooMany(
          "readingsPerRequest",
          limits.readingsPerRequest,
          `${readings.length} readings in one body; at most ${limits.readingsPerRequest}`,
        );
      }
      raw = readings;
    } else {
      raw = [body];
    }
    const latest = latestAcceptedTs(limits.maxClockSkewSeconds);
    const issues: InputIssue[] = [];
    const readings: Reading[] = [];
    for (let index = 0; index < raw.length && issues.length < MAX_ISSUES; index++) {
      const prefix = isBatch ? `readings[${index}]` : "";
      const at = (path: string) => (prefix && path ? `${prefix}.${path}` : prefix || path);
      const before = issues.length;
      const problem = (path: string, message: string) => issues.push({ path: at(path) || "(body)", message });
      const item = raw[index];
      if (typeof item !== "object" || item === null || Array.isArray(item)) {
        problem("", "must be a reading object");
        continue;
      }
      const { device: rawDevice, ts: rawTs, values } = item as Record<string, unknown>;
      for (const key in item) {
        if (issues.length >= MAX_ISSUES) break;
        if (Object.hasOwn(item, key) && key !== "device" && key !== "ts" && key !== "values") {
          problem(key, "is not a reading field (device, ts, values)");
        }
      }
      if (rawDevice === undefined) {
        if (defaultDevice === undefined) problem("device", "device is required");
      } else if (typeof rawDevice !== "string") {
        problem("device", "device must be a string");
      } else {
        const invalid = nameProblem(rawDevice, "device");
        if (invalid) problem("device", invalid);
        else if (defaultDevice !== undefined && rawDevice !== defaultDevice) {
          problem(
            "device",
            `${JSON.stringify(rawDevice)} does not match the topic's device ${JSON.stringify(defaultDevice)}`,
          );
        }
      }
      const time = parseTimestamp(rawTs);
      if (!time.ok) problem("ts", rawTs === undefined ? "ts is required" : time.message);
      else if (time.ms > latest) {
        problem(
          "ts",
          `is ${Math.round((time.ms - Date.now()) / 1000)} s ahead of this device's clock ` +
            `(${CLOCK_SKEW_KEY}: ${limits.maxClockSkewSeconds})`,
        );
      }
      const sensors = countKeysUpTo(values, limits.sensorsPerReading + 1);
      if (sensors > limits.sensorsPerReading) {
        return tooMany(
          "sensorsPerReading",
          limits.sensorsPerReading,
          `${at("values")} has more than ${limits.sensorsPerReading} sensors`,
        );
      }
      if (typeof values !== "object" || values === null || Array.isArray(values)) {
        problem("values", values === undefined ? "values is required" : "must be an object of sensor values");
      } else if (sensors === 0) {
        problem("values", "must hold at least one sensor value");
      } else {
        for (const sensor in values) {
          if (issues.length >= MAX_ISSUES) break;
          if (!Object.hasOwn(values, sensor)) continue;
          const invalid = RESERVED_NAMES.has(sensor) ? "is a reserved name" : nameProblem(sensor, "sensor name");
          if (invalid) problem(`values.${sensor}`, invalid);
          const value = (values as Record<string, unknown>)[sensor];
          if (typeof value !== "number" || !Number.isFinite(value)) {
            problem(`values.${sensor}`, "must be a finite number");
          }
        }
      }
      if (issues.length === before) {
        readings.push({
          device: (rawDevice as string | undefined) ?? defaultDevice!,
          ts: (time as { ms: number }).ms,
          values: values as Record<string, number>,
        });
      }
    }
    if (issues.length === 0) return { ok: true, readings };
    const reported = issues.slice(0, MAX_ISSUES);
    return { ok: false, issues: reported, limitKeys: limitKeysIn(reported.map((issue) => issue.message)) };
  };
}

/** The latest reading time accepted now; no bound while the wall clock is not plausible. */
function latestAcceptedTs(maxSkewSeconds: number | undefined): number {
  const now = Date.now();
  if (maxSkewSeconds === undefined || now < EARLIEST_PLAUSIBLE_MS) return Infinity;
  return now + maxSkewSeconds * 1000;
}

function nameChecker(maxLength: number) {
  return (value: string, what: string): string | null => {
    if (value.length === 0) return `${what} must not be empty`;
    if (value.length > maxLength) return `${what} is longer than ${maxLength} characters (${NAME_LENGTH_KEY})`;
    if (!value.isWellFormed()) return `${what} is not well-formed Unicode (lone surrogate)`;
    return null;
  };
}

/** Own enumerable keys of a plain object, counted up to `max` (0 for anything else). */
function countKeysUpTo(value: unknown, max: number): number {
  if (typeof value !== "object" || value === null || Array.isArray(value)) return 0;
  let count = 0;
  for (const key in value) {
    if (Object.hasOwn(value, key) && ++count >= max) break;
  }
  return count;
}

/** The keys of the bounds named in these messages. */
function limitKeysIn(messages: readonly string[]): string[] {
  return [NAME_LENGTH_KEY, CLOCK_SKEW_KEY].filter((key) => messages.some((message) => message.includes(key)));
}

function firstKeyBesides(value: object, allowed: string): string | undefined {
  for (const key in value) if (key !== allowed && Object.hasOwn(value, key)) return key;
  return undefined;
}

function refuse(path: string, message: string): ParseResult {
  return { ok: false, issues: [{ path, message }] };
}

function tooMany(name: keyof ReadingLimits, limit: number, message: string): ParseResult {
  const error = new LimitExceededError(limitKey(name), limit, message, 413);
  return { ok: false, issues: [{ path: "(body)", message }], limit: error };
}
