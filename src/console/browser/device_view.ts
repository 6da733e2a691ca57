/// <reference lib="dom" />
import { adminPost, api, ApiError } from "./api.ts";
import { formatNumber, formatTime, h, section, stat, table } from "./dom.ts";
import { sensorChart, type Series } from "./charts.ts";

/** One device: state, model, actions, each sensor's chart over the chosen range, its episodes. */
export async function deviceView(device: string, params: URLSearchParams): Promise<HTMLElement> {
  const ranges: [string, number][] = [["1 h", 3_600_000], ["6 h", 21_600_000], ["24 h", 86_400_000], [
    "7 d",
    604_800_000,
  ]];
  const listing = await api(`/v1/devices?device=${encodeURIComponent(device)}`) as {
    devices: Record<string, unknown>[];
  };
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
  const act = (label: string, path: string, body: unknown = {}) =>
    h("button", {
      class: "action",
      "data-action": label,
      onclick: async () => {
        outcome.textContent = `${label}…`;
        try {
          await adminPost(path, body);
          outcome.textContent = `${label}: done`;
          outcome.className = "outcome ok";
        } catch (error) {
          const refused = error instanceof ApiError && (error.status === 401 || error.status === 403);
          outcome.textContent = refused
            ? `${label}: refused (${(error as Error).message}); set the admin token above`
            : `${label}: ${(error as Error).message}`;
          outcome.className = "outcome bad";
        }
      },
    }, label);
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
        act("Roll back model", "/v1/models/rollback", { device }),
      ),
      outcome,
    ),
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
