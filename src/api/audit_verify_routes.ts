import { Hono } from "hono";
import type { AuditVerification } from "../egress/audit_verification.ts";
import { adminAuth } from "./admin_auth.ts";

/**
 * `GET /v1/egress/audit/verify`: the last result of the running program's `audit verify` (also in
 * `/v1/status` as `audit.verify`); `POST` (admin): run one now, or wait for the one running, and
 * answer its result. Either way at most one walk runs at a time (src/egress/audit_verification.ts).
 */
export function auditVerifyRoutes(options: { verification: AuditVerification; adminToken: string | undefined }): Hono {
  const app = new Hono();
  app.get("/v1/egress/audit/verify", (c) => c.json(options.verification.status()));
  app.post("/v1/egress/audit/verify", adminAuth(options.adminToken), async (c) => {
    return c.json(await options.verification.verifyNow());
  });
  return app;
}
