/**
 * The only way out. Every outbound connection Outpost opens goes through `Egress`: the
 * destination is checked against the manifest's allowlist and Deno's permission state, rate
 * limited and circuit-broken per destination, and every attempt, allowed or refused, is
 * appended to the hash-chained audit log. Deno's --allow-net, generated from the same
 * manifest, is the hard stop behind these checks; its NotCapable errors are caught here.
 */
import { connect as netConnect, Socket } from "node:net";
import type { EgressConfig } from "../config/config.ts";
import type { Logger } from "../observability/log.ts";
import { type Destination, destinationOf, formatDestination, isAllowed } from "./allowlist.ts";
import type { AuditLog, EgressOutcome } from "./audit.ts";
import { CircuitBreaker, type CircuitState } from "./circuit_breaker.ts";
import { EgressDeniedError, EgressUnavailableError } from "./errors.ts";
import { TokenBucket } from "./token_bucket.ts";

export interface EgressObserver {
  attempt(destination: string, outcome: EgressOutcome): void;
  circuit(destination: string, from: CircuitState, to: CircuitState): void;
}

interface Guard {
  breaker: CircuitBreaker;
  bucket: TokenBucket;
}

export interface DestinationStatus {
  destination: string;
  circuit: CircuitState;
  tokens: number;
}

export class Egress {
  readonly #config: EgressConfig;
  readonly #audit: AuditLog;
  readonly #log: Logger;
  readonly #observer: EgressObserver | null;
  readonly #guards = new Map<string, Guard>();

  constructor(config: EgressConfig, deps: { audit: AuditLog; log: Logger; observer?: EgressObserver }) {
    this.#config = config;
    this.#audit = deps.audit;
    this.#log = deps.log;
    this.#observer = deps.observer ?? null;
  }

  /** False when the allowlist is empty: Outpost then runs fully local, forwarding paused. */
  get enabled(): boolean {
    return this.#config.allowed.length > 0;
  }

  status(): DestinationStatus[] {
    return [...this.#guards].map(([destination, guard]) => ({
      destination,
      circuit: guard.breaker.state,
      tokens: Math.floor(guard.bucket.tokens),
    }));
  }

  /**
   * `fetch` through the egress checks. Redirects are never followed (a 3xx is a failed delivery,
   * audited with its Location: following it would send data to a destination the audit row does
   * not name). The response body is read here, at most RESPONSE_LIMIT_BYTES of it (to count the
   * bytes in), and handed back in a new Response. A non-2xx answer counts as a failure for the
   * breaker.
   */
  async fetch(purpose: string, url: string, init: RequestInit & { body?: Uint8Array | string }): Promise<Response> {
    const destination = destinationOf(url);
    const name = await this.#admit(purpose, destination);
    const bytesOut = typeof init.body === "string"
      ? new TextEncoder().encode(init.body).length
      : init.body?.length ?? 0;
    const guard = this.#guard(name);
    let response: Response;
    let body: Uint8Array<ArrayBuffer>;
    try {
      response = await fetch(url, { ...init, redirect: "manual" });
      body = await readAtMost(response, RESPONSE_LIMIT_BYTES);
    } catch (error) {
      guard.breaker.fail();
      const denied = error instanceof Deno.errors.NotCapable;
      await this.#record(purpose, name, bytesOut, 0, denied ? "refused_by_deno" : "network_error", error);
      throw denied ? new EgressDeniedError(name, "deno", { cause: error }) : error;
    }
    const ok = response.status >= 200 && response.status < 300;
    if (ok) guard.breaker.succeed();
    else guard.breaker.fail();
    await this.#record(
      purpose,
      name,
      bytesOut,
      body.length,
      ok ? "ok" : "http_error",
      ok
        ? undefined
        : `HTTP ${response.status}${
          response.status >= 300 && response.status < 400
            ? ` redirect to ${response.headers.get("location") ?? "(no Location)"} not followed`
            : ""
        }`,
    );
    return new Response(body, { status: response.status, statusText: response.statusText, headers: response.headers });
  }

  /** `Deno.connect` through the egress checks. */
  async connect(purpose: string, destination: Destination): Promise<Deno.TcpConn> {
    const name = await this.#admit(purpose, destination);
    try {
      const conn = await Deno.connect({ hostname: destination.host, port: destination.port });
      this.#guard(name).breaker.succeed();
      await this.#record(purpose, name, 0, 0, "ok");
      return conn;
    } catch (error) {
      return await this.#connectFailed(purpose, name, error);
    }
  }

  /**
   * `node:net` connect through the egress checks (for mqtt.js's stream builder). Resolves once
   * connected; bytes in and out are audited when the socket closes.
   */
  async socket(purpose: string, destination: Destination): Promise<Socket> {
    const name = await this.#admit(purpose, destination);
    let socket: Socket;
    try {
      socket = await new Promise<Socket>((resolve, reject) => {
        const candidate = netConnect({ host: destination.host, port: destination.port });
        candidate.once("connect", () => resolve(candidate));
        candidate.once("error", reject);
      });
    } catch (error) {
      return await this.#connectFailed(purpose, name, error);
    }
    this.#guard(name).breaker.succeed();
    await this.#record(purpose, name, 0, 0, "ok");
    socket.once("close", () => void this.#record(purpose, name, socket.bytesWritten, socket.bytesRead, "closed"));
    return socket;
  }

  /**
   * A connecting `node:net` socket for libraries that build their stream synchronously
   * (mqtt.js). A refused destination yields a socket that fails at once, so the library sees a
   * connection error; the refusal is audited either way.
   */
  socketSync(purpose: string, destination: Destination): Socket {
    let name: string;
    try {
      name = this.#admitSync(purpose, destination);
    } catch (error) {
      const refused = new Socket();
      queueMicrotask(() => refused.destroy(error as Error));
      return refused;
    }
    const guard = this.#guard(name);
    let socket: Socket;
    try {
      socket = netConnect({ host: destination.host, port: destination.port });
    } catch (error) {
      void this.#connectFailed(purpose, name, error).catch(() => {});
      const refused = new Socket();
      queueMicrotask(() => refused.destroy(error as Error));
      return refused;
    }
    socket.once("connect", () => {
      guard.breaker.succeed();
      void this.#record(purpose, name, 0, 0, "ok");
      socket.once("close", () => void this.#record(purpose, name, socket.bytesWritten, socket.bytesRead, "closed"));
    });
    socket.once("error", (error) => {
      if (socket.connecting) void this.#connectFailed(purpose, name, error).catch(() => {});
    });
    return socket;
  }

  async #connectFailed(purpose: string, name: string, error: unknown): Promise<never> {
    this.#guard(name).breaker.fail();
    const denied = error instanceof Deno.errors.NotCapable;
    await this.#record(purpose, name, 0, 0, denied ? "refused_by_deno" : "network_error", error);
    throw denied ? new EgressDeniedError(name, "deno", { cause: error }) : error;
  }

  /** Manifest, Deno permission, circuit and rate checks; throws (once audited) when refused. */
  async #admit(purpose: string, destination: Destination): Promise<string> {
    try {
      return this.#admitSync(purpose, destination);
    } finally {
      await this.#audit.settled();
    }
  }

  #admitSync(purpose: string, destination: Destination): string {
    const name = formatDestination(destination);
    if (!isAllowed(this.#config.allowed, destination)) {
      void this.#record(purpose, name, 0, 0, "refused_by_policy");
      throw new EgressDeniedError(name, "manifest");
    }
    const permission = Deno.permissions.querySync({ name: "net", host: name });
    if (permission.state !== "granted") {
      void this.#record(purpose, name, 0, 0, "refused_by_deno", `Deno net permission is "${permission.state}"`);
      throw new EgressDeniedError(name, "deno");
    }
    const guard = this.#guard(name);
    const circuitWait = guard.breaker.acquire();
    if (circuitWait > 0) {
      void this.#record(purpose, name, 0, 0, "circuit_open");
      throw new EgressUnavailableError(name, "circuit_open", circuitWait);
    }
    const rateWait = guard.bucket.take();
    if (rateWait > 0) {
      guard.breaker.abandon(); // a claimed half-open probe would otherwise be held for good
      void this.#record(purpose, name, 0, 0, "rate_limited");
      throw new EgressUnavailableError(name, "rate_limited", rateWait);
    }
    return name;
  }

  #guard(name: string): Guard {
    let guard = this.#guards.get(name);
    if (!guard) {
      const { rateLimit, circuitBreaker } = this.#config;
      guard = {
        bucket: new TokenBucket(rateLimit.perSecond, rateLimit.burst),
        breaker: new CircuitBreaker({
          failureThreshold: circuitBreaker.failureThreshold,
          openMs: circuitBreaker.openSeconds * 1000,
          onTransition: (from, to) => {
            this.#log.warn("egress.circuit", { destination: name, from, to });
            this.#observer?.circuit(name, from, to);
          },
        }),
      };
      this.#guards.set(name, guard);
    }
    return guard;
  }

  async #record(
    purpose: string,
    destination: string,
    bytesOut: number,
    bytesIn: number,
    outcome: EgressOutcome,
    error?: unknown,
  ): Promise<void> {
    const message = error === undefined ? undefined : error instanceof Error ? error.message : String(error);
    this.#observer?.attempt(destination, outcome);
    this.#log.debug("egress.attempt", { destination, purpose, outcome, bytesOut, bytesIn, error: message });
    try {
      await this.#audit.append({ destination, purpose, bytesOut, bytesIn, outcome, error: message });
    } catch (auditError) {
      this.#log.error("egress.audit_failed", { destination, outcome, error: auditError });
    }
  }
}

/** Bytes of a response body read at most; the rest is discarded unread. */
export const RESPONSE_LIMIT_BYTES = 64 * 1024;

async function readAtMost(response: Response, limit: number): Promise<Uint8Array<ArrayBuffer>> {
  if (!response.body) return new Uint8Array(0);
  const reader = response.body.getReader();
  const body = new Uint8Array(limit);
  let size = 0;
  while (size < limit) {
    const { done, value } = await reader.read();
    if (done) return body.slice(0, size);
    const take = Math.min(value.length, limit - size);
    body.set(value.subarray(0, take), size);
    size += take;
  }
  await reader.cancel().catch(() => {});
  return body.slice(0, size);
}
