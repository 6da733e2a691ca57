/**
 * The console's browser script, made from the functions in browser/: each is sent as its source
 * text (type-checked and linted here as TypeScript, emitted without types by Deno), in one
 * classic script whose last line starts the console. No bundler, no inline script, no CDN.
 *
 * The browser files' `/// <reference lib="dom" />` makes the DOM's types part of the whole type
 * check: a timer handle is typed `ReturnType<typeof setTimeout>`, not `number`.
 */
import { adminButton, adminPost, adminToken, api, ApiError, metricValues, setAdminToken } from "./browser/api.ts";
import { auditChainSummary, auditView } from "./browser/audit_view.ts";
import { drawEpisodes, plotClass, sensorChart, sparkline } from "./browser/charts.ts";
import { deviceView, modelHistory } from "./browser/device_view.ts";
import { devicesView } from "./browser/devices_view.ts";
import { formatBytes, formatNumber, formatTime, h, morePagesButton, section, stat, table } from "./browser/dom.ts";
import { eventsView } from "./browser/events_view.ts";
import { overviewView, signatureStat } from "./browser/overview_view.ts";
import { startConsole, viewFor } from "./browser/router.ts";

/** Every declaration the browser script holds; tests/console_test.ts checks none of browser/ is missing. */
export const BROWSER_PARTS: readonly { name: string; toString(): string }[] = [
  ApiError,
  api,
  adminToken,
  setAdminToken,
  adminPost,
  adminButton,
  metricValues,
  h,
  formatTime,
  formatBytes,
  formatNumber,
  stat,
  table,
  morePagesButton,
  section,
  plotClass,
  sparkline,
  drawEpisodes,
  sensorChart,
  signatureStat,
  overviewView,
  devicesView,
  modelHistory,
  deviceView,
  eventsView,
  auditChainSummary,
  auditView,
  viewFor,
  startConsole,
];

export function consoleScript(): string {
  return `"use strict";\n${BROWSER_PARTS.map(String).join("\n\n")}\n\nstartConsole();\n`;
}
