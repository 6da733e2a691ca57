import type { Config } from "../config/config.ts";
import type { TokenRequest } from "../config/cli.ts";
import { LimitExceededError } from "../limit_exceeded_error.ts";
import { IngestTokens, TokenRequestError, TokenStoreError, UnknownTokenError } from "./ingest_tokens.ts";

/**
 * `outpost tokens list|issue|rotate|revoke`: prints JSON on stdout (issue and rotate include the
 * token, shown this once); errors on stderr with exit 1. Works while the service runs.
 */
export function runTokenCommand(config: Config, request: TokenRequest): number {
  const tokens = new IngestTokens(config.storage.dataDir, config.limits);
  try {
    const result = request.action === "list"
      ? { tokens: tokens.list() }
      : request.action === "issue"
      ? tokens.issue({ devices: request.devices, label: request.label })
      : request.action === "rotate"
      ? tokens.rotate(request.id, request.graceSeconds)
      : (tokens.revoke(request.id), { revoked: request.id });
    console.log(JSON.stringify(result, null, 2));
    if (request.action !== "list" && config.api.ingestAuth !== "token") {
      console.error("Note: spec.api.ingestAuth is none: ingest does not ask for tokens until it is token");
    }
    return 0;
  } catch (error) {
    if (
      error instanceof TokenRequestError || error instanceof UnknownTokenError || error instanceof TokenStoreError ||
      error instanceof LimitExceededError
    ) {
      console.error(error.message);
      return 1;
    }
    throw error;
  }
}
