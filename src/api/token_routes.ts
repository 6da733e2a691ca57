import { Hono } from "hono";
import { z } from "zod";
import { formatIssuePath } from "../zod_issue.ts";
import { adminAuth } from "./admin_auth.ts";
import { decodeUtf8, readBoundedBody } from "./bounded_body.ts";
import { type IngestTokens, MAX_GRACE_SECONDS, type TokenLimits, TokenRequestError } from "./ingest_tokens.ts";
import { InvalidJsonError } from "./request_errors.ts";

/** Bodies of these routes are a label and a device list, bounded by the list's limits (at most 4 MiB). */
function bodyLimit(limits: TokenLimits): number {
  return Math.min(4 * 1024 * 1024, limits.devicesPerToken * (limits.nameLength * 6 + 4) + 4_096);
}

const issueBody = z.object({
  label: z.string().max(256).optional(),
  devices: z.array(z.string()).min(1),
}).strict();
const rotateBody = z.object({ graceSeconds: z.number().int().min(0).max(MAX_GRACE_SECONDS).default(3600) }).strict();

/**
 * Admin routes over the ingest tokens (README "Ingest tokens"): list, issue, rotate, revoke.
 * The secret is in the answer to issue and rotate only.
 */
export function tokenRoutes(
  options: { tokens: IngestTokens; adminToken: string | undefined; limits: TokenLimits },
): Hono {
  const { tokens } = options;
  const maxBytes = bodyLimit(options.limits);
  const app = new Hono();
  const admin = adminAuth(options.adminToken);
  app.get("/v1/ingest-tokens", admin, (c) => c.json({ tokens: tokens.list() }));
  app.post("/v1/ingest-tokens", admin, async (c) => {
    const body = parse(issueBody, await readJson(c.req.raw, maxBytes));
    return c.json(tokens.issue(body), 201);
  });
  app.post("/v1/ingest-tokens/:id/rotate", admin, async (c) => {
    const text = await readJson(c.req.raw, maxBytes, true);
    const body = parse(rotateBody, text ?? {});
    return c.json(tokens.rotate(c.req.param("id"), body.graceSeconds));
  });
  app.delete("/v1/ingest-tokens/:id", admin, (c) => {
    tokens.revoke(c.req.param("id"));
    return c.json({ revoked: c.req.param("id") });
  });
  return app;
}

async function readJson(request: Request, maxBytes: number, optional = false): Promise<unknown> {
  const text = decodeUtf8(await readBoundedBody(request, maxBytes, "spec.limits.devicesPerToken"));
  if (optional && text.trim() === "") return undefined;
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new InvalidJsonError(`Body is not JSON: ${(error as Error).message}`, { cause: error });
  }
}

function parse<T extends z.ZodType>(schema: T, value: unknown): z.output<T> {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  const issue = result.error.issues[0];
  throw new TokenRequestError(`${formatIssuePath(issue.path, "body")}: ${issue.message}`);
}
