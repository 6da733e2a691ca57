/**
 * The local console at `/`: one page, its script and stylesheets, and uPlot, all held in the
 * program (nothing fetched from elsewhere), served under a Content-Security-Policy that allows
 * only this origin's scripts and styles. It reads the same API as anyone else; admin actions
 * send the admin token the operator types in (kept in the tab's sessionStorage).
 */
import { Hono } from "hono";
import { Buffer } from "node:buffer";
import { createHash } from "node:crypto";
import { gzipSync } from "node:zlib";
import { CONSOLE_CSS, CONSOLE_HTML } from "./page.ts";
import { consoleScript } from "./script.ts";
import { UPLOT_CSS, UPLOT_JS } from "./vendor_uplot.ts";

export const CONTENT_SECURITY_POLICY = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join("; ");

interface Asset {
  type: string;
  body: Uint8Array;
  gzip: Uint8Array;
  etag: string;
}

const SOURCES: Record<string, [string, () => string]> = {
  "/": ["text/html; charset=utf-8", () => CONSOLE_HTML],
  "/console/console.js": ["text/javascript; charset=utf-8", consoleScript],
  "/console/console.css": ["text/css; charset=utf-8", () => CONSOLE_CSS],
  "/console/uplot.js": ["text/javascript; charset=utf-8", () => UPLOT_JS],
  "/console/uplot.css": ["text/css; charset=utf-8", () => UPLOT_CSS],
};

/** The console's files by path, compressed once when first asked for. */
export class ConsoleAssets {
  readonly #built = new Map<string, Asset>();

  get paths(): string[] {
    return Object.keys(SOURCES);
  }

  get(path: string): Asset | undefined {
    const source = SOURCES[path];
    if (!source) return undefined;
    let asset = this.#built.get(path);
    if (!asset) {
      const body = new TextEncoder().encode(source[1]());
      const etag = `"${createHash("sha256").update(body).digest("base64url").slice(0, 22)}"`;
      asset = { type: source[0], body, gzip: gzipSync(body, { level: 9 }), etag };
      this.#built.set(path, asset);
    }
    return asset;
  }
}

export function consoleRoutes(assets = new ConsoleAssets()): Hono {
  const app = new Hono();
  for (const path of assets.paths) {
    app.get(path, (c) => {
      const asset = assets.get(path)!;
      c.header("Content-Security-Policy", CONTENT_SECURITY_POLICY);
      c.header("X-Content-Type-Options", "nosniff");
      c.header("Referrer-Policy", "no-referrer");
      c.header("Cache-Control", "no-cache");
      c.header("ETag", asset.etag);
      c.header("Vary", "Accept-Encoding");
      if (c.req.header("if-none-match") === asset.etag) return c.body(null, 304);
      c.header("Content-Type", asset.type);
      if (/\bgzip\b/.test(c.req.header("accept-encoding") ?? "")) {
        c.header("Content-Encoding", "gzip");
        return c.body(Buffer.from(asset.gzip));
      }
      return c.body(Buffer.from(asset.body));
    });
  }
  return app;
}
