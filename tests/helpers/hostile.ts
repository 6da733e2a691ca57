/**
 * Generators and probes for hostile-input tests: oversized and malformed bodies, raw HTTP that
 * breaks framing, and the child's peak memory.
 */
import { processMemory } from "../bench/process_memory.ts";
import { malformedBodies } from "./malformed.ts";

/** The child's peak resident memory (VmHWM) in bytes. */
export async function peakRssBytes(pid: number): Promise<number> {
  return (await processMemory(pid)).peak;
}

/**
 * `count` hostile bodies for POST /v1/readings, none of which may be stored: the malformed
 * mutations plus inputs that used to crash or silently change data.
 */
export function hostileBodies(count: number, seed = 11): string[] {
  const big = (n: number, item: string) => `{"readings":[${Array(n).fill(item).join(",")}]}`;
  const reading = (values: string) => `{"device":"d","ts":1763805600000,"values":${values}}`;
  const sensors = (n: number) => `{${Array.from({ length: n }, (_, i) => `"s${i}":1`).join(",")}}`;
  const special = [
    big(200_000, "1"), // 400 KB: one zod issue per element used to kill the process
    big(20_000, reading('{"a":1}')),
    reading(sensors(1_000)),
    "[".repeat(50_000) + "]".repeat(50_000),
    reading('{"a":1,"__proto__":2}'),
    '{"device":"d\\ud800","ts":1763805600000,"values":{"a":1}}',
    '{"device":"d","ts":"1969-12-31T23:59:59Z","values":{"a":1}}',
    '{"device":"d","ts":"2026-02-30T10:00:00Z","values":{"a":1}}',
    '{"device":"d","ts":"2026-11-22T10:00:60Z","values":{"a":1}}',
    `{"device":"d","ts":${"9".repeat(400)},"values":{"a":1}}`,
    `{"device":"${"x".repeat(100_000)}","ts":1763805600000,"values":{"a":1}}`,
  ];
  const malformed = malformedBodies(Math.max(0, count - special.length * 4), seed);
  return [...special, ...special, ...special, ...special, ...malformed].slice(0, count);
}

/** Query strings for GET routes that must each be a JSON 400 (never a 500). */
export function hostileQueries(): string[] {
  const cursors = ["!!!", "%%", "AAAA", "-1", "1e5", "9".repeat(400), "MTIz====", "bnVsbA", "", "MS41"];
  return [
    ...cursors.map((cursor) => `/v1/readings?device=d&cursor=${encodeURIComponent(cursor) || "%00"}`),
    `/v1/readings?device=d&from=${"9".repeat(400)}`,
    `/v1/readings?device=d&to=${"9".repeat(400)}`,
    "/v1/readings?device=d&from=1700000000",
    "/v1/readings?device=d&from=2026-02-30T00:00:00Z",
    "/v1/readings?device=d&limit=0",
    "/v1/readings?device=d&limit=1e3",
    `/v1/events?from=${"9".repeat(400)}`,
    "/v1/events?limit=-5",
    `/v1/egress/audit?since=${"9".repeat(400)}`,
  ];
}

/** Sends raw bytes on a new connection and returns everything the server answered before closing. */
export async function rawExchange(port: number, request: Uint8Array | string, timeoutMs = 5_000): Promise<string> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const bytes = typeof request === "string" ? new TextEncoder().encode(request) : request;
  try {
    await conn.write(bytes);
  } catch { /* the server may close first */ }
  const chunks: Uint8Array[] = [];
  const timer = setTimeout(() => conn.close(), timeoutMs);
  try {
    const buffer = new Uint8Array(16 * 1024);
    while (true) {
      const n = await conn.read(buffer);
      if (n === null) break;
      chunks.push(buffer.slice(0, n));
    }
  } catch {
    /* closed by the timer or reset */
  } finally {
    clearTimeout(timer);
    try {
      conn.close();
    } catch { /* already closed */ }
  }
  return new TextDecoder().decode(concat(chunks));
}

function concat(chunks: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(chunks.reduce((n, chunk) => n + chunk.length, 0));
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.length;
  }
  return out;
}

/** The status and JSON body of a raw HTTP answer. */
export function parseAnswer(text: string): { status: number; body: Record<string, unknown> | null } {
  const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0);
  const start = text.indexOf("\r\n\r\n");
  try {
    return { status, body: JSON.parse(text.slice(start + 4)) };
  } catch {
    return { status, body: null };
  }
}
