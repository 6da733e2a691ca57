import { Hono } from "hono";
import { HTTPException } from "hono/http-exception";
import { type LimitsConfig, readAdminToken } from "../config/config.ts";
import type { TrustedKey } from "../release/signature.ts";
import type { Logger } from "../observability/log.ts";
import type { Metrics } from "../observability/metrics.ts";
import type { Store } from "../store/store.ts";
import type { Detection } from "../detect/detection.ts";
import type { Forwarding } from "../forward/pipeline.ts";
import { consoleRoutes } from "../console/console_routes.ts";
import type { AuditVerification } from "../egress/audit_verification.ts";
import { auditVerifyRoutes } from "./audit_verify_routes.ts";
import { detectRoutes } from "./detect_routes.ts";
import { egressRoutes } from "./egress_routes.ts";
import { errorHandler } from "./errors.ts";
import { healthRoutes, type ReadinessProbe } from "./health.ts";
import type { IngestTokens } from "./ingest_tokens.ts";
import { readingsRoutes } from "./readings.ts";
import { Admission } from "./admission.ts";
import { seriesRoutes } from "./series_routes.ts";
import { tokenRoutes } from "./token_routes.ts";

export interface ApiOptions {
  identity: { name: string; version: string };
  /** How this process runs: as a systemd service or not. */
  service: { underSystemd: boolean; pid: number };
  store: Store;
  metrics: Metrics;
  forwarding: Forwarding;
  detection: Detection;
  log: Logger;
  readiness: ReadinessProbe;
  bodyLimitBytes: number;
  limits: LimitsConfig;
  /** `spec.release.trustedKeys`: uploaded models must be signed by one of them when not empty. */
  trustedKeys?: readonly TrustedKey[];
  /** The ingest tokens (managed by admin routes either way)... */
  ingestTokens: IngestTokens;
  /** ...and whether ingest requires one (`spec.api.ingestAuth: token`). */
  ingestAuth: boolean;
  /** The admin token's file (src/config/config.ts readAdminToken), besides OUTPOST_ADMIN_TOKEN. */
  adminTokenFile?: string | null;
  /** Serve /metrics on this app (false when a separate metrics port serves it). */
  serveMetrics: boolean;
  /** The running program's `audit verify` (its last result is in /v1/status). */
  auditVerification: AuditVerification;
}

/** The local HTTP API over the running components. */
export function createApi(options: ApiOptions): Hono {
  const app = new Hono();
  const { metrics } = options;
  app.use(async function recordLatency(c, next) {
    const started = performance.now();
    await next();
    const route = c.req.routePath === "/*" ? "unmatched" : c.req.routePath;
    metrics.httpDuration.observe(
      { route, method: c.req.method, status: String(c.res.status) },
      (performance.now() - started) / 1000,
    );
  });
  app.route(
    "/",
    healthRoutes({
      identity: options.identity,
      readiness: options.readiness,
      metrics: options.serveMetrics ? metrics : null,
    }),
  );
  const adminToken = readAdminToken(options.adminTokenFile ?? null);
  // Waiters are bounded too: a client cannot park every connection on charts.
  const heavyReads = new Admission(
    { concurrency: options.limits.heavyReads, queue: 8 * options.limits.heavyReads, queueWaitMs: 10_000 },
    { what: "charts, sorted device listings or reading pages", queueLimit: "heavyReads", waitLimit: "heavyReads" },
  );
  app.route("/", readingsRoutes({ ...options, tokens: options.ingestAuth ? options.ingestTokens : null }));
  app.route("/", tokenRoutes({ tokens: options.ingestTokens, adminToken, limits: options.limits }));
  app.route(
    "/",
    detectRoutes({
      heavyReads,
      client: options.store.client,
      detection: options.detection,
      adminToken,
      now: () => options.store.now(),
      trustedKeys: options.trustedKeys ?? [],
    }),
  );
  app.route(
    "/",
    seriesRoutes({
      client: options.store.client,
      maxSensors: options.limits.sensorsPerDevice,
      maxRangeHours: options.limits.seriesRangeHours,
      heavyReads,
    }),
  );
  app.route("/", consoleRoutes());
  app.route(
    "/",
    egressRoutes({
      audit: options.forwarding.audit,
      status: async () => ({
        service: options.service,
        ...(await options.forwarding.status()),
        audit: { verify: options.auditVerification.status() },
      }),
    }),
  );
  app.route("/", auditVerifyRoutes({ verification: options.auditVerification, adminToken }));
  app.notFound((c) => {
    throw new HTTPException(404, { message: `No route for ${c.req.method} ${c.req.path}` });
  });
  app.onError(errorHandler(options.log, metrics));
  return app;
}
