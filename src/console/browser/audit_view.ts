/// <reference lib="dom" />
import { api } from "./api.ts";
import { formatBytes, formatTime, h, section, table } from "./dom.ts";

/** The egress audit log of the last 24 hours, newest first. */
export async function auditView(): Promise<HTMLElement> {
  const since = Date.now() - 86_400_000;
  const audit = await api(`/v1/egress/audit?since=${since}&limit=10000`) as { entries: Record<string, unknown>[] };
  const rows = audit.entries.slice(-500).reverse();
  return section(
    "Egress audit (24 h)",
    h(
      "p",
      { class: "muted" },
      "Every outbound call, written before it leaves. Check the chain on the device with ",
      h("code", {}, "outpost audit verify"),
      ".",
    ),
    rows.length === 0 ? h("p", { class: "muted" }, "No outbound call in the last 24 hours.") : table(
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
  );
}
