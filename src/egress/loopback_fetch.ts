/**
 * The one way Outpost's own tools call Outpost's own API (wait-ready after start, the upgrade
 * gate, `check --deployment`). It is not egress (nothing leaves the device), so it is not
 * audited, but it keeps egress's other rules: only local addresses, no redirects followed, a
 * timeout, and the body read up to a bound.
 *
 * When the API serves TLS (`spec.api.tls`), the call is HTTPS pinned to the API's own
 * certificate: the peer must present exactly the certificate in `certFile`, or the call fails
 * and its answer is never used. No name or CA check is needed (the certificate may name the
 * plant's hostname, not 127.0.0.1). These calls carry no secrets (/readyz, /healthz, /metrics).
 */
import { request as httpsRequest } from "node:https";
import type { TLSSocket } from "node:tls";
import { X509Certificate } from "node:crypto";
import { isLoopback } from "./allowlist.ts";
import { boundedResponse } from "./bounded_body.ts";

export interface LoopbackFetchInit extends Omit<RequestInit, "redirect"> {
  /** Whole call, answer body included; default 5 s. Combined with `signal`. */
  timeoutMs?: number;
  /** Body bytes read at most, the rest discarded; default 1 MiB. */
  maxBodyBytes?: number;
  /**
   * The API's own listen address (`config.api.listen`): admitted even when not loopback, since
   * Outpost is bound to it on this device.
   */
  apiListen?: { readonly host: string; readonly port: number };
  /** The API's TLS files (`config.api.tls`): the call goes over HTTPS pinned to `certFile`. */
  tls?: { readonly certFile: string } | null;
}

export const LOOPBACK_TIMEOUT_MS = 5_000;
export const LOOPBACK_BODY_BYTES = 1024 * 1024;

/**
 * `fetch` limited to this device: the URL's host must be loopback (`localhost`, 127.0.0.0/8,
 * ::1), the unspecified address a wildcard listener answers on (0.0.0.0, ::), or exactly
 * `apiListen`; anything else is a TypeError before any connection. Resolves with a Response
 * whose body holds at most `maxBodyBytes`; a 3xx comes back as it is, not followed.
 */
export async function loopbackFetch(url: string | URL, init: LoopbackFetchInit = {}): Promise<Response> {
  const target = new URL(url);
  if (target.protocol !== "http:" && target.protocol !== "https:") {
    throw new TypeError(`loopbackFetch calls only http(s): got ${target.protocol}`);
  }
  const host = target.hostname.startsWith("[") ? target.hostname.slice(1, -1) : target.hostname;
  const port = Number(target.port || (target.protocol === "https:" ? 443 : 80));
  const own = init.apiListen !== undefined && init.apiListen.host.toLowerCase() === host.toLowerCase() &&
    init.apiListen.port === port;
  if (!isLoopback(host) && host !== "0.0.0.0" && host !== "::" && !own) {
    throw new TypeError(`loopbackFetch calls only this device: ${target.host} is not loopback`);
  }
  const { timeoutMs = LOOPBACK_TIMEOUT_MS, maxBodyBytes = LOOPBACK_BODY_BYTES, apiListen: _, tls, signal, ...rest } =
    init;
  const deadline = AbortSignal.timeout(timeoutMs);
  if (tls) {
    const pinned = pinnedFetch(target, tls.certFile, {
      method: rest.method ?? "GET",
      headers: new Headers(rest.headers),
      body: typeof rest.body === "string" ? rest.body : undefined,
      maxBodyBytes,
      signal: signal ? AbortSignal.any([signal, deadline]) : deadline,
    });
    return await pinned;
  }
  const response = await fetch(target, {
    ...rest,
    redirect: "manual",
    signal: signal ? AbortSignal.any([signal, deadline]) : deadline,
  });
  return (await boundedResponse(response, maxBodyBytes)).response;
}

/** The API's URL for `path`: https when it serves TLS, IPv6 hosts in brackets. */
export function ownApiUrl(
  api: { readonly listen: { readonly host: string; readonly port: number }; readonly tls: unknown },
  path: string,
): string {
  const { host, port } = api.listen;
  return `${api.tls ? "https" : "http"}://${host.includes(":") ? `[${host}]` : host}:${port}${path}`;
}

interface PinnedInit {
  method: string;
  headers: Headers;
  body: string | undefined;
  maxBodyBytes: number;
  signal: AbortSignal;
}

/** One HTTPS request whose peer must present the certificate in `certFile` (compared by SHA-256). */
function pinnedFetch(target: URL, certFile: string, init: PinnedInit): Promise<Response> {
  const pem = Deno.readTextFileSync(certFile);
  const expected = new X509Certificate(pem).fingerprint256;
  return new Promise<Response>((resolve, reject) => {
    const request = httpsRequest({
      host: target.hostname.replace(/^\[|\]$/g, ""),
      port: Number(target.port || 443),
      path: `${target.pathname}${target.search}`,
      method: init.method,
      headers: Object.fromEntries(init.headers),
      // The identity check is the pin below. Naming a CA keeps node:tls off the system's store.
      rejectUnauthorized: false,
      ca: pem,
      signal: init.signal,
    });
    request.on("socket", (socket) => {
      (socket as TLSSocket).once("secureConnect", () => {
        const presented = (socket as TLSSocket).getPeerCertificate()?.fingerprint256;
        if (presented !== expected) {
          request.destroy(new Error(`${target.host} did not present the API's certificate (${certFile})`));
        }
      });
    });
    request.on("error", reject);
    request.on("response", (response) => {
      const chunks: Uint8Array[] = [];
      let size = 0;
      response.on("data", (chunk: Uint8Array) => {
        if (size >= init.maxBodyBytes) return;
        const take = chunk.subarray(0, init.maxBodyBytes - size);
        chunks.push(take);
        size += take.length;
      });
      response.on("error", reject);
      response.on("end", () => {
        const headers = new Headers();
        for (const [name, value] of Object.entries(response.headers)) {
          if (value !== undefined) headers.set(name, Array.isArray(value) ? value.join(", ") : String(value));
        }
        const body = new Uint8Array(size);
        let offset = 0;
        for (const chunk of chunks) {
          body.set(chunk, offset);
          offset += chunk.length;
        }
        const status = response.statusCode ?? 502;
        resolve(new Response([101, 103, 204, 205, 304].includes(status) ? null : body, { status, headers }));
      });
    });
    request.end(init.body);
  });
}
