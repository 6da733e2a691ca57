/**
 * The one way Outpost's own tools call Outpost's own API (wait-ready after start, the upgrade
 * gate, `check --deployment`). It is not egress (nothing leaves the device), so it is not
 * audited, but it keeps egress's other rules: only local addresses, no redirects followed, a
 * timeout, and the body read up to a bound.
 */
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
  const { timeoutMs = LOOPBACK_TIMEOUT_MS, maxBodyBytes = LOOPBACK_BODY_BYTES, apiListen: _, signal, ...rest } = init;
  const deadline = AbortSignal.timeout(timeoutMs);
  const response = await fetch(target, {
    ...rest,
    redirect: "manual",
    signal: signal ? AbortSignal.any([signal, deadline]) : deadline,
  });
  return (await boundedResponse(response, maxBodyBytes)).response;
}
