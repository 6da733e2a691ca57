import type { MiddlewareHandler } from "hono";
import { timingSafeEqual } from "node:crypto";

/** Admin routes require `Authorization: Bearer <OUTPOST_ADMIN_TOKEN>`; without a token they are off. */
export function adminAuth(token: string | undefined): MiddlewareHandler {
  const expected = token === undefined ? null : new TextEncoder().encode(token);
  return async function requireAdmin(c, next) {
    if (expected === null) {
      return c.json({ error: "admin_disabled", message: "Admin routes are off: set OUTPOST_ADMIN_TOKEN" }, 403);
    }
    const given = new TextEncoder().encode((c.req.header("authorization") ?? "").replace(/^Bearer /, ""));
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
      c.header("WWW-Authenticate", "Bearer");
      return c.json({ error: "unauthorized", message: "Missing or wrong admin bearer token" }, 401);
    }
    await next();
  };
}
