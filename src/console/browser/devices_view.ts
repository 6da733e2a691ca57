/// <reference lib="dom" />
import { api } from "./api.ts";
import { formatNumber, formatTime, h, section } from "./dom.ts";
import { sparkline } from "./charts.ts";

interface DeviceEntry {
  device: string;
  state: string;
  calibration: { collected: number; needed: number } | null;
  lastSeen: string | null;
  latestScore: { score: number; anomaly: boolean; ts: string } | null;
  openEvent: { id: number; start: string } | null;
  readings: number;
}

/**
 * A page of devices (50), sorted by the server (`sort`, `order`: the order holds across pages),
 * each with a sparkline of its score. A column header sorts by it; again, the other way.
 */
export async function devicesView(params: URLSearchParams): Promise<HTMLElement> {
  const cursor = params.get("cursor");
  const sort = params.get("sort") ?? "device";
  const order = params.get("order") ?? "asc";
  const query = new URLSearchParams({ limit: "50", sort, order, ...(cursor ? { cursor } : {}) });
  const page = await api(`/v1/devices?${query}`) as { devices: DeviceEntry[]; nextCursor: string | null };
  // Column, the server's sort key (null: not sortable), the order a first click asks for.
  const columns: [string, string | null, string][] = [
    ["device", "device", "asc"],
    ["state", "state", "asc"],
    ["last seen", "lastSeen", "desc"],
    ["latest score", "score", "desc"],
    ["calibration", null, ""],
    ["open event", null, ""],
  ];
  const link = (by: string, direction: string, next?: string) =>
    `#/devices?${new URLSearchParams({ sort: by, order: direction, ...(next ? { cursor: next } : {}) })}`;
  const body = h("tbody");
  const sparklines: { device: string; lastSeen: string | null; cell: HTMLElement }[] = [];
  const rows = page.devices.map((d) => {
    const cell = h("td", { class: "spark" });
    sparklines.push({ device: d.device, lastSeen: d.lastSeen, cell });
    const row = h(
      "tr",
      { "data-device": d.device },
      h("td", {}, h("a", { href: `#/device/${encodeURIComponent(d.device)}` }, d.device)),
      h(
        "td",
        {},
        h("span", { class: d.state === "active" ? "ok" : d.state === "quarantined" ? "bad" : "warn" }, d.state),
      ),
      h("td", {}, formatTime(d.lastSeen)),
      h("td", { class: d.latestScore?.anomaly ? "bad" : "" }, formatNumber(d.latestScore?.score)),
      h("td", {}, d.calibration ? `${d.calibration.collected} / ${d.calibration.needed}` : "done"),
      h(
        "td",
        {},
        d.openEvent
          ? h(
            "a",
            { href: `#/device/${encodeURIComponent(d.device)}?event=${d.openEvent.id}`, class: "bad" },
            `#${d.openEvent.id} since ${formatTime(d.openEvent.start)}`,
          )
          : "—",
      ),
      cell,
    );
    return { entry: d, row };
  });

  body.replaceChildren(...rows.map((r) => r.row));
  const header = h(
    "tr",
    {},
    columns.map(([name, key, first]) => {
      if (key === null) return h("th", {}, name);
      const current = key === sort;
      const direction = current ? (order === "asc" ? "desc" : "asc") : first;
      return h(
        "th",
        current ? { "aria-sort": order === "asc" ? "ascending" : "descending" } : {},
        h(
          "a",
          { class: "sort", href: link(key, direction), "data-sort": key },
          name,
          current ? (order === "asc" ? " ▲" : " ▼") : "",
        ),
      );
    }),
    h("th", {}, "score, its last hour"),
  );
  const next = page.nextCursor ? h("a", { href: link(sort, order, page.nextCursor) }, "Next page →") : null;
  const view = section(
    "Devices",
    page.devices.length === 0 ? h("p", { class: "muted" }, "No device has sent a reading yet.") : null,
    h("table", { "data-table": "devices" }, h("thead", {}, header), body),
    h("p", {}, cursor ? h("a", { href: link(sort, order) }, "← First page") : null, " ", next),
  );
  for (const { device, lastSeen, cell } of sparklines) {
    const to = lastSeen ? Date.parse(lastSeen) + 1 : Date.now();
    api(`/v1/devices/${encodeURIComponent(device)}/series?from=${to - 3_600_000}&to=${to}&buckets=60`)
      .then((series) => sparkline(cell, series as { ts: number[]; score: (number | null)[] }))
      .catch(() => cell.append("—"));
  }
  return view;
}
