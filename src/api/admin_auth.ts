import type { MiddlewareHandler } from "hono";
import { timingSafeEqual } from "node:crypto";
import { AdminAuthError } from "./request_errors.ts";

/** Admin routes require `Authorization: Bearer <OUTPOST_ADMIN_TOKEN>`; without a token they are off. */
export function adminAuth(token: string | undefined): MiddlewareHandler {
  const expected = token === undefined ? null : new TextEncoder().encode(token);
  return async function requireAdmin(c, next) {
    if (expected === null) throw new AdminAuthError(true);
    // The scheme is case-insensitive (RFC 9110); a header without it is not a bearer token.
    const match = /^Bearer[ \t]+(.*?)[ \t]*$/i.exec(c.req.header("authorization") ?? "");
    const given = new TextEncoder().encode(match?.[1] ?? "");
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) throw new AdminAuthError(false);
    await next();
  };
}
