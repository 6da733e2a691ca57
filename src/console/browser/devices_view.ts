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

/** A page of devices (50), sortable by any column within the page, each with a sparkline of its score. */
export async function devicesView(params: URLSearchParams): Promise<HTMLElement> {
  const cursor = params.get("cursor");
  const query = new URLSearchParams({ limit: "50", ...(cursor ? { cursor } : {}) });
  const page = await api(`/v1/devices?${query}`) as { devices: DeviceEntry[]; nextCursor: string | null };
  const columns: [string, (d: DeviceEntry) => string | number][] = [
    ["device", (d) => d.device],
    ["state", (d) => d.state],
    ["last seen", (d) => d.lastSeen ?? ""],
    ["latest score", (d) => d.latestScore?.score ?? -Infinity],
    ["calibration", (d) => d.calibration ? d.calibration.collected / d.calibration.needed : 2],
    ["open event", (d) => d.openEvent?.id ?? 0],
  ];
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
  let sortedBy = -1;
  const sort = (index: number) => {
    const direction = sortedBy === index ? -1 : 1;
    sortedBy = sortedBy === index ? -1 : index;
    const key = columns[index][1];
    rows.sort((a, b) => {
      const x = key(a.entry);
      const y = key(b.entry);
      return (x < y ? -1 : x > y ? 1 : 0) * direction;
    });
    body.replaceChildren(...rows.map((r) => r.row));
  };
  body.replaceChildren(...rows.map((r) => r.row));
  const header = h(
    "tr",
    {},
    columns.map(([name], index) => h("th", {}, h("button", { class: "sort", onclick: () => sort(index) }, name))),
    h("th", {}, "score, its last hour"),
  );
  const next = page.nextCursor
    ? h("a", { href: `#/devices?cursor=${encodeURIComponent(page.nextCursor)}` }, "Next page →")
    : null;
  const view = section(
    "Devices",
    page.devices.length === 0 ? h("p", { class: "muted" }, "No device has sent a reading yet.") : null,
    h("table", { "data-table": "devices" }, h("thead", {}, header), body),
    h("p", {}, cursor ? h("a", { href: "#/devices" }, "← First page") : null, " ", next),
  );
  for (const { device, lastSeen, cell } of sparklines) {
    const to = lastSeen ? Date.parse(lastSeen) + 1 : Date.now();
    api(`/v1/devices/${encodeURIComponent(device)}/series?from=${to - 3_600_000}&to=${to}&buckets=60`)
      .then((series) => sparkline(cell, series as { ts: number[]; score: (number | null)[] }))
      .catch(() => cell.append("—"));
  }
  return view;
}
