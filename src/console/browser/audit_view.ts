/// <reference lib="dom" />
import { adminButton, api } from "./api.ts";
import { formatBytes, formatTime, h, section, stat, table } from "./dom.ts";

/** `GET /v1/egress/audit/verify`: the running program's last `audit verify` (src/egress/audit_verification.ts). */
export interface AuditVerifyStatus {
  state: "pending" | "ok" | "failed";
  running: boolean;
  last: {
    ok: boolean;
    rows: number;
    problem?: string;
    reason?: string;
    firstBadId?: number;
    trigger: string;
    finished: string;
    durationMs: number;
  } | null;
  error: { reason: string; at: string } | null;
  next: string | null;
}

/** The audit chain in a few words, and how it should look: intact, not intact (and how), not checked yet. */
export function auditChainSummary(status: AuditVerifyStatus): { text: string; state: "ok" | "bad" | "warn" } {
  const last = status.last;
  if (status.state === "pending" || last === null) {
    return { text: status.running ? "being checked" : "not checked yet", state: "warn" };
  }
  if (last.ok) return { text: `intact (${last.rows} rows, ${formatTime(last.finished)})`, state: "ok" };
  return { text: `NOT INTACT: ${last.problem} (${formatTime(last.finished)})`, state: "bad" };
}

/** Whether the egress audit chain verifies, then the whole log newest first, 100 rows a page (`before`). */
export async function auditView(params: URLSearchParams): Promise<HTMLElement> {
  const before = params.get("before");
  const query = new URLSearchParams({ order: "desc", limit: "100", ...(before ? { before } : {}) });
  const [verify, audit] = await Promise.all([
    api("/v1/egress/audit/verify") as Promise<AuditVerifyStatus>,
    api(`/v1/egress/audit?${query}`) as Promise<{ entries: Record<string, unknown>[]; nextBefore: number | null }>,
  ]);
  const rows = audit.entries;
  const summary = auditChainSummary(verify);
  const last = verify.last;
  const outcome = h("p", { class: "outcome", role: "status" });
  const rerender = () => dispatchEvent(new HashChangeEvent("hashchange"));
  return h(
    "div",
    { class: "grid", "data-view": "audit" },
    section(
      "Audit chain",
      h(
        "div",
        { class: "stats", "data-audit-verify": verify.state },
        stat("chain", summary.text, summary.state),
        last ? stat("rows checked", String(last.rows)) : null,
        last ? stat("took", `${(last.durationMs / 1000).toFixed(2)} s`) : null,
        last ? stat("checked on", last.trigger) : null,
        stat("next check", verify.running ? "running now" : formatTime(verify.next)),
      ),
      last && !last.ok
        ? h(
          "p",
          { class: "bad", "data-audit-problem": last.problem },
          `${last.reason}`,
          last.firstBadId ? ` (first bad row: #${last.firstBadId})` : "",
          ". Compare with your last off-device export (outpost audit export) and treat the device as possibly " +
            "compromised.",
        )
        : null,
      verify.error ? h("p", { class: "warn" }, `The last check could not run: ${verify.error.reason}`) : null,
      h(
        "p",
        { class: "muted" },
        "Outpost runs ",
        h("code", {}, "audit verify"),
        " over the whole chain after start and every 10 minutes or more (longer when the log is long). ",
        "Run it now (admin token):",
      ),
      h("div", { class: "actions" }, adminButton("Verify now", "/v1/egress/audit/verify", {}, outcome, rerender)),
      outcome,
    ),
    section(
      "Egress audit",
      h("p", { class: "muted" }, "Every outbound call, written before it leaves; newest first."),
      rows.length === 0 ? h("p", { class: "muted" }, before ? "No older row." : "No outbound call yet.") : table(
        ["id", "time", "destination", "purpose", "outcome", "out", "in", "error"],
        rows.map((row) => [
          String(row.id),
          formatTime(String(row.ts)),
          String(row.destination),
          String(row.purpose),
          String(row.outcome),
          formatBytes(Number(row.bytesOut)),
          formatBytes(Number(row.bytesIn)),
          row.error ? String(row.error) : "",
        ]),
        { "data-table": "audit" },
      ),
      h(
        "p",
        {},
        before ? h("a", { href: "#/audit" }, "← Newest") : null,
        " ",
        audit.nextBefore === null
          ? null
          : h("a", { href: `#/audit?before=${audit.nextBefore}`, "data-page": "older" }, "Older →"),
      ),
    ),
  );
}
