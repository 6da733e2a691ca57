/// <reference lib="dom" />
/** The console's calls to Outpost's own API (same origin); the admin token lives in sessionStorage. */

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
