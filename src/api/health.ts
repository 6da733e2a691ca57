import { Hono } from "hono";
import type { Metrics } from "../observability/metrics.ts";
import type { ReleaseSignature } from "../version.ts";

/** One component's part in readiness: `ok: false` fails /readyz; `degraded` only reports. */
export interface ReadinessCheck {
  name: string;
  ok: boolean;
  degraded?: boolean;
  detail?: string;
}

export type ReadinessProbe = () => Promise<ReadinessCheck[]>;

export interface HealthRouteOptions {
  /**
   * Who answers: the manifest's name, the release version, and (from the runtime) this run's
   * instance id and PID, so that an upgrade's gate can tell the candidate from whatever else holds
   * the port.
   */
  identity: {
    name: string;
    version: string;
    instanceId?: string;
    pid?: number;
    source?: string;
    /** The release's signature as checked at start (`src/version.ts`): verified, unsigned or invalid. */
    signature?: ReleaseSignature | null;
  };
  readiness: ReadinessProbe;
  metrics: Metrics | null;
}

/**
 * `/healthz` (the process answers, and who it is), `/readyz` (store open and migrated, intake running; outside
 * dependencies such as the broker show as degraded without failing) and `/metrics`.
 */
export function healthRoutes(options: HealthRouteOptions): Hono {
  const app = new Hono();
  app.get("/healthz", (c) => c.json({ status: "ok", ...options.identity }));
  app.get("/readyz", async (c) => {
    const checks = await options.readiness();
    const ready = checks.every((check) => check.ok);
    const degraded = checks.some((check) => check.degraded);
    const status = ready ? (degraded ? "degraded" : "ready") : "not_ready";
    return c.json({ status, ...options.identity, checks }, ready ? 200 : 503);
  });
  if (options.metrics) app.route("/", metricsRoutes(options.metrics));
  return app;
}

/** `/metrics` alone, for a separate metrics port. */
export function metricsRoutes(metrics: Metrics): Hono {
  const app = new Hono();
  app.get("/metrics", async (c) => {
    c.header("Content-Type", metrics.contentType);
    return c.body(await metrics.render());
  });
  return app;
}
