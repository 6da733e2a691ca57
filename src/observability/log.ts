export type LogLevel = "debug" | "info" | "warn" | "error";

const RANK: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };
const RESERVED = { ts: true, level: true, event: true };

export interface Logger {
  debug(event: string, fields?: Record<string, unknown>): void;
  info(event: string, fields?: Record<string, unknown>): void;
  warn(event: string, fields?: Record<string, unknown>): void;
  error(event: string, fields?: Record<string, unknown>): void;
}

/**
 * A structured logger: one JSON object per line on stderr, `{ts, level, event, ...fields}`. A
 * field named like one of those three is written with a `_` in front, never over them.
 */
export function createLogger(level: LogLevel, write: (line: string) => void = writeStderr): Logger {
  const threshold = RANK[level];
  const emit = (entryLevel: LogLevel, event: string, fields?: Record<string, unknown>) => {
    if (RANK[entryLevel] < threshold) return;
    const entry: Record<string, unknown> = { ts: new Date().toISOString(), level: entryLevel, event };
    if (fields) {
      for (const [key, value] of Object.entries(fields)) {
        entry[key in RESERVED ? `_${key}` : key] = value instanceof Error ? describe(value) : value;
      }
    }
    write(JSON.stringify(entry));
  };
  return {
    debug: (event, fields) => emit("debug", event, fields),
    info: (event, fields) => emit("info", event, fields),
    warn: (event, fields) => emit("warn", event, fields),
    error: (event, fields) => emit("error", event, fields),
  };
}

function describe(error: Error): Record<string, unknown> {
  return { name: error.name, message: error.message, ...(error.cause ? { cause: String(error.cause) } : {}) };
}

const encoder = new TextEncoder();
function writeStderr(line: string): void {
  const bytes = encoder.encode(line + "\n");
  let written = 0;
  while (written < bytes.length) written += Deno.stderr.writeSync(bytes.subarray(written));
}
