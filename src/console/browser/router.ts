/// <reference lib="dom" />
import { adminToken, setAdminToken } from "./api.ts";
import { auditView } from "./audit_view.ts";
import { deviceView } from "./device_view.ts";
import { devicesView } from "./devices_view.ts";
import { h } from "./dom.ts";
import { eventsView } from "./events_view.ts";
import { overviewView } from "./overview_view.ts";

/** The view of the current `#/path?query`. */
export function viewFor(hash: string): Promise<HTMLElement> {
  const [path, query] = hash.replace(/^#/, "").split("?");
  const params = new URLSearchParams(query ?? "");
  const parts = (path || "/").split("/").filter(Boolean);
  if (parts[0] === "devices") return devicesView(params);
  if (parts[0] === "device" && parts[1]) return deviceView(decodeURIComponent(parts[1]), params);
  if (parts[0] === "events") return eventsView(params);
  if (parts[0] === "audit") return auditView(params);
  return overviewView();
}

/** Renders the view of the hash into `<main>`, again on every hash change; the overview refreshes itself. */
export function startConsole(): void {
  const main = document.querySelector("main")!;
  const token = document.querySelector<HTMLInputElement>("#admin-token")!;
  token.value = adminToken();
  token.addEventListener("change", () => setAdminToken(token.value.trim()));
  let refresh: ReturnType<typeof setTimeout> | undefined;
  const render = async () => {
    clearTimeout(refresh);
    const hash = location.hash || "#/";
    for (const link of document.querySelectorAll<HTMLAnchorElement>("nav a")) {
      link.classList.toggle(
        "current",
        hash.startsWith(link.getAttribute("href")!) && (link.getAttribute("href") !== "#/" || hash === "#/"),
      );
    }
    main.setAttribute("aria-busy", "true");
    try {
      main.replaceChildren(await viewFor(hash));
    } catch (error) {
      main.replaceChildren(
        h(
          "section",
          { class: "card error" },
          h("h2", {}, "Could not load this view"),
          h("p", {}, (error as Error).message),
        ),
      );
    } finally {
      main.setAttribute("aria-busy", "false");
    }
    if (hash === "#/") refresh = setTimeout(render, 10_000);
  };
  addEventListener("hashchange", render);
  render();
}
