/// <reference lib="dom" />
import { api } from "./api.ts";
import { formatNumber, formatTime, h, section, table } from "./dom.ts";

interface EventEntry {
  id: number;
  device: string;
  start: string;
  end: string | null;
  open: boolean;
  peakScore: number;
  sensors: string[];
  endReason: string | null;
  verdict: { kind: string } | null;
}

/** Episodes newest first, filtered by device and state, each linking to its device at that time. */
export async function eventsView(params: URLSearchParams): Promise<HTMLElement> {
  const query = new URLSearchParams({ limit: "50" });
  for (const key of ["device", "state", "cursor"]) {
    const value = params.get(key);
    if (value) query.set(key, value);
  }
  const page = await api(`/v1/events?${query}`) as { events: EventEntry[]; nextCursor: string | null };
  const device = h("input", {
    name: "device",
    placeholder: "device",
    value: params.get("device") ?? "",
  }) as HTMLInputElement;
  const state = h(
    "select",
    { name: "state" },
    ["", "open", "closed"].map((value) =>
      h("option", { value, selected: params.get("state") === value }, value || "any state")
    ),
  ) as HTMLSelectElement;
  const filter = h(
    "form",
    {
      class: "filter",
      onsubmit: (event: Event) => {
        event.preventDefault();
        const next = new URLSearchParams();
        if (device.value) next.set("device", device.value);
        if (state.value) next.set("state", state.value);
        location.hash = `#/events?${next}`;
      },
    },
    device,
    state,
    h("button", { type: "submit" }, "Filter"),
  );
  const around = (event: EventEntry) => {
    const from = Date.parse(event.start) - 900_000;
    const to = (event.end ? Date.parse(event.end) : Date.now()) + 900_000;
    return `#/device/${encodeURIComponent(event.device)}?from=${from}&to=${to}`;
  };
  const nextQuery = new URLSearchParams(query);
  nextQuery.delete("limit");
  if (page.nextCursor) nextQuery.set("cursor", page.nextCursor);
  return section(
    "Events",
    filter,
    page.events.length === 0 ? h("p", { class: "muted" }, "No anomaly episode.") : table(
      ["event", "device", "start", "end", "peak score", "top sensors", "end reason", "verdict"],
      page.events.map((event) => [
        `#${event.id}`,
        h("a", { href: around(event) }, event.device),
        formatTime(event.start),
        event.open ? h("span", { class: "bad" }, "open") : formatTime(event.end),
        formatNumber(event.peakScore),
        event.sensors.join(", "),
        event.endReason ?? "—",
        event.verdict?.kind ?? "—",
      ]),
      { "data-table": "events" },
    ),
    page.nextCursor ? h("p", {}, h("a", { href: `#/events?${nextQuery}` }, "Older →")) : null,
  );
}
