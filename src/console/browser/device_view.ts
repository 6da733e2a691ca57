/// <reference lib="dom" />
import { adminButton, api } from "./api.ts";
import { formatNumber, formatTime, h, morePagesButton, section, stat, table } from "./dom.ts";
import { sensorChart, type Series } from "./charts.ts";

/** `GET /v1/models?device=`: the device's models as the store keeps them, and its history of changes. */
export interface ModelHistory {
  scoredBy: "device" | "global" | null;
  assignment: {
    current: number;
    previous: number | null;
    changed: string;
    deactivated: { reason: string; since: string } | null;
  } | null;
  models: { id: number; name: string; version: string; source: string; sha256: string; stored: string; role: string }[];
  nextCursor: string | null;
  history: {
    id: number;
    at: string;
    kind: string;
    model: { id: number; name: string | null; version: string | null; sha256: string | null } | null;
    reason: string | null;
    signedBy: string | null;
  }[];
  nextHistoryCursor: string | null;
}

/** One device: state, model, actions, each sensor's chart over the chosen range, its episodes. */
export async function deviceView(device: string, params: URLSearchParams): Promise<HTMLElement> {
  const ranges: [string, number][] = [["1 h", 3_600_000], ["6 h", 21_600_000], ["24 h", 86_400_000], [
    "7 d",
    604_800_000,
  ]];
  const [listing, models] = await Promise.all([
    api(`/v1/devices?device=${encodeURIComponent(device)}`) as Promise<{ devices: Record<string, unknown>[] }>,
    api(`/v1/models?device=${encodeURIComponent(device)}&limit=10`) as Promise<ModelHistory>,
  ]);
  const entry = listing.devices[0] as {
    state: string;
    model: { name?: string; version?: string; scope?: string; deactivated?: unknown } | null;
    latestScore: { score: number; anomaly: boolean } | null;
    lastSeen: string | null;
    calibration: { collected: number; needed: number } | null;
  } | undefined;
  // Without a range: the last hour of the device's own readings (its clock may not be ours).
  const toMs = Number(params.get("to")) || (entry?.lastSeen ? Date.parse(entry.lastSeen) + 1 : Date.now());
  const fromMs = Number(params.get("from")) || toMs - 3_600_000;
  const link = (from: number, to: number) =>
    `#/device/${encodeURIComponent(device)}?from=${Math.round(from)}&to=${Math.round(to)}`;
  const series = await api(
    `/v1/devices/${encodeURIComponent(device)}/series?from=${fromMs}&to=${toMs}&buckets=600`,
  ) as Series & { bucketMs: number; truncated: boolean };
  const outcome = h("p", { class: "outcome", role: "status" });
  const act = (label: string, path: string, body: unknown = {}) => adminButton(label, path, body, outcome);
  const encoded = encodeURIComponent(device);
  const rangeLinks = h(
    "p",
    { class: "ranges" },
    "Range: ",
    ranges.map(([label, span]) => h("a", { href: link(toMs - span, toMs), class: "range" }, label)),
    ` ${formatTime(fromMs)} to ${formatTime(toMs)}, ${series.bucketMs / 1000} s per point`,
  );
  const charts = h("div", { class: "charts", "data-charts": device });
  const sensors = Object.keys(series.sensors);
  const view = h(
    "div",
    { class: "grid", "data-view": "device" },
    section(
      `Device ${device}`,
      entry
        ? h(
          "div",
          { class: "stats" },
          stat("state", entry.state, entry.state === "active" ? "ok" : "warn"),
          stat("last seen", formatTime(entry.lastSeen)),
          stat("latest score", formatNumber(entry.latestScore?.score), entry.latestScore?.anomaly ? "bad" : "ok"),
          stat("model", entry.model ? `${entry.model.name ?? "?"} ${entry.model.version ?? ""}` : "none yet"),
          entry.calibration
            ? stat("calibration", `${entry.calibration.collected} / ${entry.calibration.needed}`)
            : null,
        )
        : h("p", { class: "bad" }, "This device is not known to detection."),
      h(
        "div",
        { class: "actions" },
        act("Recalibrate", `/v1/devices/${encoded}/calibrate`),
        act("Accept operating point", `/v1/devices/${encoded}/accept`),
      ),
      outcome,
    ),
    modelHistory(device, models),
    section(
      "Sensors",
      rangeLinks,
      sensors.length === 0 ? h("p", { class: "muted" }, "No readings in this range.") : null,
      series.truncated
        ? h("p", { class: "warn" }, "More sensors than spec.limits.sensorsPerDevice: the first are shown.")
        : null,
      charts,
    ),
    section(
      "Episodes in this range",
      series.events.length === 0 ? h("p", { class: "muted" }, "None.") : table(
        ["event", "start", "end", "peak score", "top sensors", ""],
        series.events.map((event) => [
          `#${event.id}`,
          h(
            "a",
            { href: link(event.startMs - 900_000, (event.endMs ?? Date.now()) + 900_000) },
            formatTime(event.startMs),
          ),
          event.endMs === null ? h("span", { class: "bad" }, "open") : formatTime(event.endMs),
          formatNumber(event.peakScore),
          event.sensors.join(", "),
          act("False alarm", `/v1/events/${event.id}/false-alarm`),
        ]),
        { "data-table": "episodes" },
      ),
    ),
  );
  // Charts need their container's width: drawn once the view is in the document.
  requestAnimationFrame(() => {
    for (const sensor of sensors) {
      const target = h("div", { class: "chart", "data-sensor": sensor });
      charts.append(target);
      sensorChart(target, series, sensor, { fromMs, toMs });
    }
  });
  return view;
}

/**
 * The device's model: who scores it, its history of changes and its models, each newest first
 * (paged), and the rollback next to them.
 */
export function modelHistory(device: string, history: ModelHistory): HTMLElement {
  const outcome = h("p", { class: "outcome", role: "status" });
  const assignment = history.assignment;
  const rows = (page: ModelHistory) =>
    page.models.map((model) => [
      `#${model.id}`,
      model.version,
      model.name,
      model.source,
      formatTime(model.stored),
      h("span", { class: model.role === "current" ? "ok" : model.role === "previous" ? "warn" : "muted" }, model.role),
      h("code", { title: model.sha256 }, model.sha256.slice(0, 12)),
    ]);
  const list = table(["model", "version", "name", "source", "stored", "role", "sha256"], rows(history), {
    "data-table": "models",
  });
  const more = morePagesButton("Older models", list, history.nextCursor, async (cursor) => {
    const page = await api(
      `/v1/models?device=${encodeURIComponent(device)}&limit=10&cursor=${encodeURIComponent(cursor)}`,
    ) as ModelHistory;
    return { rows: rows(page), cursor: page.nextCursor };
  });
  const changes = (page: ModelHistory) =>
    page.history.map((change) => [
      formatTime(change.at),
      h("span", { class: change.kind === "deactivated" ? "bad" : "" }, change.kind.replace(/_/g, " ")),
      change.model ? `#${change.model.id} ${change.model.name ?? "?"} ${change.model.version ?? ""}` : "none",
      change.model?.sha256 ? h("code", { title: change.model.sha256 }, change.model.sha256.slice(0, 12)) : "",
      change.reason ?? "",
      change.signedBy ? h("code", {}, change.signedBy) : "",
    ]);
  const changeList = table(["when", "change", "model", "sha256", "reason", "signing key"], changes(history), {
    "data-table": "model-history",
  });
  const moreHistory = morePagesButton("Older changes", changeList, history.nextHistoryCursor, async (cursor) => {
    const page = await api(
      `/v1/models?device=${encodeURIComponent(device)}&limit=10&historyCursor=${encodeURIComponent(cursor)}`,
    ) as ModelHistory;
    return { rows: changes(page), cursor: page.nextHistoryCursor };
  });
  const scoredBy = history.scoredBy === "device"
    ? "its own model"
    : history.scoredBy === "global"
    ? "the global model (GET /v1/models?scope=global)"
    : "no model yet (calibrating)";
  return section(
    "Model",
    h(
      "p",
      {},
      `Scored by ${scoredBy}.`,
      assignment ? ` Its assignment last changed ${formatTime(assignment.changed)}.` : "",
    ),
    assignment?.deactivated
      ? h(
        "p",
        { class: "bad" },
        `Deactivated since ${formatTime(assignment.deactivated.since)}: ${assignment.deactivated.reason}`,
      )
      : null,
    h("h3", {}, "History"),
    history.history.length === 0 ? h("p", { class: "muted" }, "No change of its model is recorded.") : changeList,
    moreHistory,
    h("h3", {}, "Stored models"),
    history.models.length === 0 ? h("p", { class: "muted" }, "No model of its own is stored.") : list,
    more,
    h(
      "div",
      { class: "actions" },
      assignment?.previous
        ? adminButton(
          "Roll back model",
          "/v1/models/rollback",
          { device },
          outcome,
          () => dispatchEvent(new HashChangeEvent("hashchange")),
        )
        : h("span", { class: "muted" }, "No previous model to roll back to."),
    ),
    outcome,
    h(
      "p",
      { class: "muted" },
      "The history keeps every change for a year (200 at most); stored models are those that can still run: " +
        "calibrations beyond the current, previous and newest are pruned.",
    ),
  );
}
