/// <reference lib="dom" />
/**
 * DOM helpers of the console's browser script. Browser code: every function here is sent to the
 * browser as its source text (src/console/script.ts), so each is a self-contained declaration
 * that calls the others by name. Text from the API is only ever set as text, never as HTML.
 */

type Child = Node | string | number | null | undefined | false | Child[];

/** `h("a", {href: "#/"}, "text")`: an element with attributes, listeners (`onclick`) and children. */
export function h(tag: string, attributes: Record<string, unknown> = {}, ...children: Child[]): HTMLElement {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      element.addEventListener(name.slice(2), value as EventListener);
    } else element.setAttribute(name, String(value));
  }
  const append = (child: Child) => {
    if (Array.isArray(child)) child.forEach(append);
    else if (child instanceof Node) element.append(child);
    else if (child !== null && child !== undefined && child !== false) element.append(String(child));
  };
  children.forEach(append);
  return element;
}

export function formatTime(value: string | number | null): string {
  if (value === null) return "—";
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? String(value) : date.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

export function formatBytes(bytes: number | null | undefined): string {
  if (bytes === null || bytes === undefined || !Number.isFinite(bytes)) return "—";
  const units = ["B", "KiB", "MiB", "GiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value.toFixed(unit === 0 ? 0 : 1)} ${units[unit]}`;
}

export function formatNumber(value: number | null | undefined, digits = 2): string {
  return value === null || value === undefined || !Number.isFinite(value) ? "—" : value.toFixed(digits);
}

/** A labelled value: `<div class="stat"><span>label</span><strong>value</strong></div>`. */
export function stat(label: string, value: Child, state?: "ok" | "bad" | "warn"): HTMLElement {
  return h("div", { class: `stat ${state ?? ""}` }, h("span", {}, label), h("strong", {}, value));
}

/** A table with a header row; `rows` are arrays of cells. */
export function table(headers: string[], rows: Child[][], attributes: Record<string, unknown> = {}): HTMLElement {
  return h(
    "table",
    attributes,
    h("thead", {}, h("tr", {}, headers.map((header) => h("th", {}, header)))),
    h("tbody", {}, rows.map((cells) => h("tr", {}, cells.map((cell) => h("td", {}, cell))))),
  );
}

/**
 * A button under `list` (a `table`) that appends the rows of the page after `cursor`, page by
 * page, and goes once there is none; null when there is no next page to begin with.
 */
export function morePagesButton(
  label: string,
  list: HTMLElement,
  cursor: string | null,
  nextPage: (cursor: string) => Promise<{ rows: Child[][]; cursor: string | null }>,
): HTMLElement | null {
  if (cursor === null) return null;
  let next = cursor;
  const button = h("button", {
    class: "action",
    onclick: async () => {
      const page = await nextPage(next);
      const body = list.querySelector("tbody")!;
      for (const cells of page.rows) body.append(h("tr", {}, cells.map((cell) => h("td", {}, cell))));
      if (page.cursor === null) button.remove();
      else next = page.cursor;
    },
  }, label);
  return button;
}

export function section(title: string, ...children: Child[]): HTMLElement {
  return h("section", { class: "card" }, h("h2", {}, title), ...children);
}
