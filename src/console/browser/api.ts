/// <reference lib="dom" />
/** The console's calls to Outpost's own API (same origin); the admin token lives in sessionStorage. */
import { h } from "./dom.ts";

export class ApiError extends Error {
  status: number;
  body: unknown;
  constructor(status: number, body: unknown) {
    const detail = typeof body === "object" && body !== null && "message" in body
      ? String((body as { message: unknown }).message)
      : String(body);
    super(`${status}: ${detail}`);
    this.status = status;
    this.body = body;
  }
}

/** GET (or `init`) a path of the API; JSON answers parsed, text otherwise; throws ApiError on 4xx/5xx. */
export async function api(path: string, init: RequestInit = {}): Promise<unknown> {
  const response = await fetch(path, { ...init, headers: { accept: "application/json", ...(init.headers ?? {}) } });
  const text = await response.text();
  let body: unknown = text;
  if ((response.headers.get("content-type") ?? "").includes("json")) {
    try {
      body = JSON.parse(text);
    } catch { /* left as text */ }
  }
  if (!response.ok) throw new ApiError(response.status, body);
  return body;
}

export function adminToken(): string {
  return sessionStorage.getItem("outpost-admin-token") ?? "";
}

export function setAdminToken(token: string): void {
  if (token) sessionStorage.setItem("outpost-admin-token", token);
  else sessionStorage.removeItem("outpost-admin-token");
}

/** POST an admin action with the token; resolves to the answer, throws ApiError when refused. */
export function adminPost(path: string, body: unknown = {}): Promise<unknown> {
  return api(path, {
    method: "POST",
    headers: { authorization: `Bearer ${adminToken()}`, "content-type": "application/json" },
    body: JSON.stringify(body),
  });
}

/**
 * A button for an admin action: POSTs `body` to `path` with the token and says in `outcome` what
 * came of it (a refusal for want of the token says where to set it); `after` runs once it is done.
 */
export function adminButton(
  label: string,
  path: string,
  body: unknown,
  outcome: HTMLElement,
  after?: (answer: unknown) => void,
): HTMLElement {
  return h("button", {
    class: "action",
    "data-action": label,
    onclick: async () => {
      outcome.textContent = `${label}…`;
      outcome.className = "outcome";
      try {
        const answer = await adminPost(path, body);
        outcome.textContent = `${label}: done`;
        outcome.className = "outcome ok";
        after?.(answer);
      } catch (error) {
        const refused = error instanceof ApiError && (error.status === 401 || error.status === 403);
        outcome.textContent = refused
          ? `${label}: refused (${(error as Error).message}); set the admin token above`
          : `${label}: ${(error as Error).message}`;
        outcome.className = "outcome bad";
      }
    },
  }, label);
}

/** The samples of one Prometheus metric (no labels or any labels), from the exposition text. */
export function metricValues(exposition: string, name: string): number[] {
  const values: number[] = [];
  for (const line of exposition.split("\n")) {
    if (line.startsWith(`${name} `) || line.startsWith(`${name}{`)) {
      values.push(Number(line.slice(line.lastIndexOf(" ") + 1)));
    }
  }
  return values;
}
