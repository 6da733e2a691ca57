/// <reference lib="dom" />
import { api, metricValues } from "./api.ts";
import { auditChainSummary, type AuditVerifyStatus } from "./audit_view.ts";
import { formatBytes, formatTime, h, section, stat, table } from "./dom.ts";

interface Readiness {
  status: string;
  name: string;
  version: string;
  source?: string;
  signature: { status: string; keyId?: string; reason?: string } | null;
  checks: { name: string; ok: boolean; degraded?: boolean; detail: string }[];
}

interface Status {
  forwarding: {
    state: string;
    reason?: string;
    outbox: { items: Record<string, number>; bytes: number; maxBytes: number };
  };
  egress: { enabled: boolean; allowed: string[]; destinations: { destination: string; circuit: string }[] };
  audit: { verify: AuditVerifyStatus };
}

/** Health, readiness, store, outbox, egress, the last audit rows, memory and version. */
export async function overviewView(): Promise<HTMLElement> {
  const readyFetch = fetch("/readyz").then((response) => response.json() as Promise<Readiness>);
  const since = Date.now() - 86_400_000;
  const [ready, status, metrics, audit] = await Promise.all([
    readyFetch,
    api("/v1/status") as Promise<Status>,
    api("/metrics") as Promise<string>,
    api(`/v1/egress/audit?since=${since}&limit=1000`) as Promise<{ entries: Record<string, unknown>[] }>,
  ]);
  const first = (name: string) => metricValues(metrics, name)[0] ?? null;
  const storeSize = first("outpost_store_size_bytes");
  const storeLimit = first("outpost_store_limit_bytes");
  const rss = first("outpost_process_resident_memory_bytes");
  const heap = first("outpost_process_heap_used_bytes");
  // The V8 heap's bound (--max-old-space-size=64) ends the process; RSS includes code pages the
  // unit's MemoryMax=128M reclaims, so it is shown, not judged (the same as the alert rules).
  const heapBound = 64 * 1024 * 1024;
  const outbox = status.forwarding.outbox;
  const lastAudit = audit.entries.slice(-20).reverse();
  const chain = auditChainSummary(status.audit.verify);
  return h(
    "div",
    { class: "grid", "data-view": "overview" },
    section(
      "Service",
      h(
        "div",
        { class: "stats" },
        stat("readiness", ready.status, ready.status === "ready" ? "ok" : "bad"),
        stat("release", `${ready.name} ${ready.version}`),
        signatureStat(ready.signature),
        stat("V8 heap", `${formatBytes(heap)} of 64 MiB`, heap !== null && heap > heapBound * 0.75 ? "warn" : "ok"),
        stat("memory (RSS, with code)", `${formatBytes(rss)}; the unit's limit is 128 MiB`),
      ),
      table(
        ["check", "state", "detail"],
        ready.checks.map((check) => [
          check.name,
          h(
            "span",
            { class: check.ok ? (check.degraded ? "warn" : "ok") : "bad" },
            check.ok ? (check.degraded ? "degraded" : "ok") : "failing",
          ),
          check.detail,
        ]),
        { "data-table": "checks" },
      ),
    ),
    section(
      "Store",
      h(
        "div",
        { class: "stats" },
        stat(
          "size",
          `${formatBytes(storeSize)} of ${formatBytes(storeLimit)}`,
          storeSize !== null && storeLimit && storeSize > storeLimit * 0.8 ? "warn" : "ok",
        ),
        stat("readings", String(first("outpost_store_readings") ?? "—")),
        stat("devices", String(first("outpost_store_devices") ?? "—")),
      ),
    ),
    section(
      "Store and forward",
      h(
        "div",
        { class: "stats" },
        stat(
          "forwarding",
          status.forwarding.state,
          status.forwarding.state === "ok" ? "ok" : status.forwarding.state === "retrying" ? "warn" : undefined,
        ),
        stat("outbox", `${formatBytes(outbox.bytes)} of ${formatBytes(outbox.maxBytes)}`),
      ),
      status.forwarding.reason ? h("p", { class: "muted" }, status.forwarding.reason) : null,
      table(["class", "items waiting"], Object.entries(outbox.items).map(([kind, count]) => [kind, count])),
    ),
    section(
      "Egress",
      h(
        "p",
        {},
        status.egress.enabled ? `Allowed: ${status.egress.allowed.join(", ")}` : "Egress disabled: nothing leaves.",
      ),
      status.egress.destinations.length === 0
        ? h("p", { class: "muted" }, "No destination called since the start.")
        : table(
          ["destination", "circuit"],
          status.egress.destinations.map((
            d,
          ) => [d.destination, h("span", { class: d.circuit === "closed" ? "ok" : "bad" }, d.circuit)]),
        ),
      h(
        "div",
        { class: "stats", "data-audit-verify": status.audit.verify.state },
        stat("audit chain", h("a", { href: "#/audit", class: chain.state }, chain.text), chain.state),
      ),
      h("h3", {}, "Last audit rows (24 h)"),
      lastAudit.length === 0 ? h("p", { class: "muted" }, "No outbound call in the last 24 hours.") : table(
        ["time", "destination", "purpose", "outcome"],
        lastAudit.map((
          row,
        ) => [formatTime(String(row.ts)), String(row.destination), String(row.purpose), String(row.outcome)]),
      ),
      h("p", {}, h("a", { href: "#/audit" }, "The whole audit log")),
    ),
  );
}

/** The release's signature as checked at start: verified (by which key), unsigned, or invalid (why). */
export function signatureStat(signature: Readiness["signature"]): HTMLElement {
  if (signature === null) return stat("signature", "not a release (run from source)");
  if (signature.status === "verified") return stat("signature", `verified, key ${signature.keyId}`, "ok");
  if (signature.status === "invalid") return stat("signature", `invalid: ${signature.reason}`, "bad");
  return stat("signature", signature.status, "warn");
}
