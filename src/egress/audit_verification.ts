/**
 * `audit verify` inside the running program: the same walk as the command (audit_verify.ts) over
 * the live store, run shortly after start, then on a schedule, and when an operator asks
 * (`POST /v1/egress/audit/verify`). Its last result is in `/v1/status` and the console, and
 * `outpost_audit_tamper_detected` follows it, so a log tampered with while Outpost runs is seen
 * without a restart.
 *
 * Rules it keeps:
 * - A walk reads every row and computes one HMAC per row: its cost grows with the log (bounded by
 *   retention; about 76 µs a row on a 2-core x86, so 76 s for a million rows). So it never runs per request: at most one walk at a time (a request during a walk
 *   gets that walk's result), and the schedule keeps walks to at most `maxShare` of wall time
 *   (the next one waits `interval`, or longer when the last walk took long).
 * - A finding is confirmed by a second walk before it is reported: retention may cut the head of
 *   the log during a walk, which reads as rows deleted.
 * - A walk that could not run (`error`: the store failed) changes neither the finding nor the
 *   gauge; it is reported, and the last completed check stays what the status shows.
 * - Until the first walk completes, the gauge is what the check at open found (AuditLog's onTamper,
 *   src/forward/pipeline.ts).
 */
import type { Client } from "@libsql/client";
import type { Logger } from "../observability/log.ts";
import type { Metrics } from "../observability/metrics.ts";
import type { AuditKey } from "./audit_key.ts";
import { readHead } from "./audit_head.ts";
import { databaseSource } from "./audit_file.ts";
import { verifyAudit, type VerifyResult } from "./audit_verify.ts";

/** The first walk starts this long after start, when the start's own work is done. */
export const FIRST_VERIFY_DELAY_MS = 2_000;
/** Walks follow each other at least this far apart... */
export const VERIFY_INTERVAL_MS = 10 * 60_000;
/** ...and further when a walk is long: walks take at most this share of wall time. */
export const VERIFY_MAX_SHARE = 0.05;

export type VerifyTrigger = "start" | "schedule" | "operator";

/** What `/v1/status` (`audit.verify`) and the console show. */
export interface AuditVerifyStatus {
  /** `pending` until the first walk completes; then the last completed walk's verdict. */
  state: "pending" | "ok" | "failed";
  /** A walk is running now. */
  running: boolean;
  /** The last completed walk (ok or failed), RFC 3339 times. */
  last: (VerifyResult & { trigger: VerifyTrigger; started: string; finished: string; durationMs: number }) | null;
  /** The last walk that could not run, if it came after the last completed one. */
  error: { reason: string; at: string } | null;
  /** When the next scheduled walk starts. */
  next: string | null;
}

export interface AuditVerification {
  status(): AuditVerifyStatus;
  /** Runs a walk now, or joins the one running; resolves to the status after it. */
  verifyNow(): Promise<AuditVerifyStatus>;
  /** Settles once `signal` aborted and a walk in progress stopped. */
  readonly finished: Promise<void>;
}

export function startAuditVerification(
  deps: {
    client: Client;
    key: AuditKey;
    headPath: string;
    log: Logger;
    /** The gauges it keeps current. */
    metrics: Pick<Metrics, "auditTamperDetected" | "auditVerified" | "auditVerifyDuration">;
  },
  options: { signal: AbortSignal; firstDelayMs?: number; intervalMs?: number; maxShare?: number },
): AuditVerification {
  const { log, metrics } = deps;
  const signal = options.signal;
  const intervalMs = options.intervalMs ?? VERIFY_INTERVAL_MS;
  const maxShare = options.maxShare ?? VERIFY_MAX_SHARE;
  let last: AuditVerifyStatus["last"] = null;
  let error: AuditVerifyStatus["error"] = null;
  let running: Promise<void> | null = null;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let nextAt: number | null = null;

  // The source reads the live store; once aborted, its next read throws and the walk ends as `error`.
  const source = databaseSource(deps.client);
  const rowsFrom = source.rowsFrom;
  source.rowsFrom = (fromId, limit) => {
    if (signal.aborted) return Promise.reject(new Error("Outpost is stopping"));
    return rowsFrom(fromId, limit);
  };
  const walk = async (): Promise<VerifyResult> => {
    const head = await readHead(deps.headPath, deps.key).catch((e: Error) => ({
      state: "unreadable" as const,
      error: e.message,
    }));
    return await verifyAudit(source, { key: deps.key, head });
  };

  const run = async (trigger: VerifyTrigger) => {
    const started = Date.now();
    const t0 = performance.now();
    let result = await walk();
    if (!result.ok && result.problem !== "error" && !signal.aborted) {
      const first = result;
      result = await walk();
      if (result.ok) log.info("audit.verify_unconfirmed", { problem: first.problem, reason: first.reason });
    }
    if (signal.aborted) return;
    const durationMs = performance.now() - t0;
    if (!result.ok && result.problem === "error") {
      error = { reason: result.reason, at: new Date().toISOString() };
      log.warn("audit.verify_error", { reason: result.reason, trigger });
    } else {
      const finished = new Date().toISOString();
      last = { ...result, trigger, started: new Date(started).toISOString(), finished, durationMs };
      error = null;
      metrics.auditTamperDetected.set(result.ok ? 0 : 1);
      metrics.auditVerified.set(Date.now() / 1000);
      metrics.auditVerifyDuration.set(durationMs / 1000);
      if (result.ok) log.debug("audit.verified", { rows: result.rows, durationMs: Math.round(durationMs), trigger });
      else {
        log.error("audit.verify_failed", {
          problem: result.problem,
          reason: result.reason,
          firstBadId: result.firstBadId ?? null,
          rows: result.rows,
          trigger,
        });
      }
    }
    schedule(Math.max(intervalMs, durationMs / maxShare));
  };

  const start = (trigger: VerifyTrigger): Promise<void> => {
    if (running) return running;
    clearTimeout(timer);
    nextAt = null;
    running = run(trigger).catch((e: Error) => {
      error = { reason: e.message, at: new Date().toISOString() };
      log.error("audit.verify_error", { error: e, trigger });
      schedule(intervalMs);
    }).finally(() => {
      running = null;
    });
    return running;
  };

  function schedule(delayMs: number, trigger: VerifyTrigger = "schedule") {
    if (signal.aborted) return;
    clearTimeout(timer);
    nextAt = Date.now() + delayMs;
    timer = setTimeout(() => void start(trigger), delayMs);
  }
  schedule(options.firstDelayMs ?? FIRST_VERIFY_DELAY_MS, "start");

  const status = (): AuditVerifyStatus => ({
    state: last === null ? "pending" : last.ok ? "ok" : "failed",
    running: running !== null,
    last,
    error,
    next: nextAt === null ? null : new Date(nextAt).toISOString(),
  });

  const finished = new Promise<void>((resolve) => {
    const stop = async () => {
      clearTimeout(timer);
      nextAt = null;
      await running;
      resolve();
    };
    if (signal.aborted) void stop();
    else signal.addEventListener("abort", () => void stop(), { once: true });
  });

  return {
    status,
    async verifyNow() {
      if (!signal.aborted) await start("operator");
      return status();
    },
    finished,
  };
}
