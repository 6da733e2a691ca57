/**
 * The only way out. Every outbound connection Outpost opens goes through `Egress`: the HTTP
 * sink, the MQTT uplink, the MQTT ingest broker and the alert publisher. The destination is
 * checked against the manifest's allowlist and Deno's permission state, rate limited and
 * circuit-broken per destination, and every attempt, allowed or refused, is appended to the
 * hash-chained audit log. Deno's --allow-net, generated from the same manifest, is the hard
 * stop behind these checks; its NotCapable errors are caught here.
 *
 * Rules it always keeps:
 * - Nothing leaves before its `attempt` row is committed; if that append fails, the call is not
 *   made (fail closed) and the failure is counted as outcome `audit_failed`.
 * - Every admitted call then gets its outcome row (`ok`, `http_error`, `network_error`, ...); a
 *   connection also gets `closed` with its bytes. A refusal gets one row. An outcome row that
 *   cannot be written turns a success into EgressAuditError.
 * - Redirects are never followed; response bodies are read up to RESPONSE_LIMIT_BYTES.
 * - Loopback peers (`EgressConfig.local`, the ingest broker on loopback) pass without
 *   `egressAllowed` and without a circuit breaker (see #guard), but are checked against Deno's
 *   permissions, rate limited and audited like any destination.
 */
import { connect as netConnect, type Socket } from "node:net";
import { Duplex } from "node:stream";
import type { EgressConfig } from "../config/config.ts";
import type { Logger } from "../observability/log.ts";
import { type Destination, destinationOf, formatDestination, isAllowed } from "./allowlist.ts";
import { boundedResponse } from "./bounded_body.ts";
import type { AuditLog, EgressOutcome } from "./audit.ts";
import { CircuitBreaker, type CircuitState } from "./circuit_breaker.ts";
import { EgressAuditError, EgressDeniedError, EgressUnavailableError } from "./errors.ts";
import { TokenBucket } from "./token_bucket.ts";

export interface EgressObserver {
  /** Once per audit row written (not `attempt` rows), or `audit_failed` when a row could not be. */
  attempt(destination: string, outcome: Exclude<EgressOutcome, "attempt"> | "audit_failed"): void;
  circuit(destination: string, from: CircuitState, to: CircuitState): void;
}

interface Guard {
  /** Null for a loopback peer only (EgressConfig.local): see #guard. */
  breaker: CircuitBreaker | null;
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
      circuit: guard.breaker?.state ?? "closed",
      tokens: Math.floor(guard.bucket.tokens),
    }));
  }

  /**
   * `fetch` through the egress checks. Redirects are never followed (a 3xx is a failed delivery,
   * audited with its Location: following it would send data to a destination the audit row does
   * not name). The response body is read here, at most RESPONSE_LIMIT_BYTES of it (to count the
   * bytes in), and handed back in a new Response. A non-2xx answer counts as a failure for the
   * breaker. Rows: `attempt` before the request leaves, then its outcome.
   */
  async fetch(purpose: string, url: string, init: RequestInit & { body?: Uint8Array | string }): Promise<Response> {
    const destination = destinationOf(url);
    const name = await this.#admit(purpose, destination);
    const bytesOut = typeof init.body === "string"
      ? new TextEncoder().encode(init.body).length
      : init.body?.length ?? 0;
    const guard = this.#guard(name);
    await this.#begin(purpose, name, bytesOut);
    let response: Response;
    let bytesIn: number;
    try {
      ({ response, bytes: bytesIn } = await boundedResponse(
        await fetch(url, { ...init, redirect: "manual" }),
        RESPONSE_LIMIT_BYTES,
      ));
    } catch (error) {
      return await this.#callFailed(purpose, name, bytesOut, error);
    }
    const ok = response.status >= 200 && response.status < 300;
    if (ok) guard.breaker?.succeed();
    else guard.breaker?.fail();
    await this.#record(
      purpose,
      name,
      bytesOut,
      bytesIn,
      ok ? "ok" : "http_error",
      ok
        ? undefined
        : `HTTP ${response.status}${
          response.status >= 300 && response.status < 400
            ? ` redirect to ${response.headers.get("location") ?? "(no Location)"} not followed`
            : ""
        }`,
    );
    return response;
  }

  /** `Deno.connect` through the egress checks. */
  async connect(purpose: string, destination: Destination): Promise<Deno.TcpConn> {
    const name = await this.#admit(purpose, destination);
    await this.#begin(purpose, name, 0);
    let conn: Deno.TcpConn;
    try {
      conn = await Deno.connect({ hostname: destination.host, port: destination.port });
    } catch (error) {
      return await this.#callFailed(purpose, name, 0, error);
    }
    this.#guard(name).breaker?.succeed();
    try {
      await this.#record(purpose, name, 0, 0, "ok");
    } catch (error) {
      conn.close();
      throw error;
    }
    return conn;
  }

  /**
   * `node:net` connect through the egress checks. Resolves once connected; bytes in and out are
   * audited when the socket closes. `signal` abandons the attempt (and destroys the socket).
   */
  async socket(purpose: string, destination: Destination, options: { signal?: AbortSignal } = {}): Promise<Socket> {
    const { signal } = options;
    signal?.throwIfAborted();
    const name = await this.#admit(purpose, destination);
    await this.#begin(purpose, name, 0);
    let socket: Socket;
    try {
      socket = await new Promise<Socket>((resolve, reject) => {
        signal?.throwIfAborted();
        const candidate = netConnect({ host: destination.host, port: destination.port });
        const onAbort = () => {
          candidate.destroy();
          reject(signal!.reason);
        };
        signal?.addEventListener("abort", onAbort, { once: true });
        candidate.once("connect", () => {
          signal?.removeEventListener("abort", onAbort);
          resolve(candidate);
        });
        candidate.once("error", (error) => {
          signal?.removeEventListener("abort", onAbort);
          reject(error);
        });
      });
    } catch (error) {
      return await this.#callFailed(purpose, name, 0, error);
    }
    this.#guard(name).breaker?.succeed();
    try {
      await this.#record(purpose, name, 0, 0, "ok");
    } catch (error) {
      socket.destroy();
      throw error;
    }
    socket.once("close", () => {
      this.#record(purpose, name, socket.bytesWritten, socket.bytesRead, "closed").catch(() => {});
    });
    return socket;
  }

  /**
   * A stream for libraries that build their connection synchronously (mqtt.js's stream
   * builder). What the library writes is held until `socket()` has admitted, audited and
   * connected: nothing leaves before its `attempt` row is committed. A refused or failed
   * attempt destroys the stream with the error, so the library sees a connection error.
   */
  socketSync(purpose: string, destination: Destination): Duplex {
    return new EgressStream((signal) => this.socket(purpose, destination, { signal }));
  }

  /** The `attempt` row, written before anything leaves: if it cannot be written, nothing leaves. */
  async #begin(purpose: string, name: string, bytesOut: number): Promise<void> {
    try {
      await this.#record(purpose, name, bytesOut, 0, "attempt");
    } catch (error) {
      this.#guard(name).breaker?.abandon(); // a claimed half-open probe would otherwise be held for good
      throw error;
    }
  }

  /** Audits a call that failed on the way (the original error is what the caller gets). */
  async #callFailed(purpose: string, name: string, bytesOut: number, error: unknown): Promise<never> {
    this.#guard(name).breaker?.fail();
    const denied = error instanceof Deno.errors.NotCapable;
    await this.#record(purpose, name, bytesOut, 0, denied ? "refused_by_deno" : "network_error", error)
      .catch(() => {}); // counted and logged in #record; the call failed either way
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
    // A refusal is thrown whether or not its row could be written (#record counts that).
    const refused = (outcome: EgressOutcome, detail?: string) =>
      void this.#record(purpose, name, 0, 0, outcome, detail).catch(() => {});
    if (!isAllowed(this.#config.allowed, destination) && !isAllowed(this.#config.local ?? [], destination)) {
      refused("refused_by_policy");
      throw new EgressDeniedError(name, "manifest");
    }
    const permission = Deno.permissions.querySync({ name: "net", host: name });
    if (permission.state !== "granted") {
      refused("refused_by_deno", `Deno net permission is "${permission.state}"`);
      throw new EgressDeniedError(name, "deno");
    }
    const guard = this.#guard(name);
    const circuitWait = guard.breaker?.acquire() ?? 0;
    if (circuitWait > 0) {
      refused("circuit_open");
      throw new EgressUnavailableError(name, "circuit_open", circuitWait);
    }
    const rateWait = guard.bucket.take();
    if (rateWait > 0) {
      guard.breaker?.abandon(); // a claimed half-open probe would otherwise be held for good
      refused("rate_limited");
      throw new EgressUnavailableError(name, "rate_limited", rateWait);
    }
    return name;
  }

  /**
   * Rate limit and breaker of one destination. A loopback peer that is not also in the allowlist
   * (the ingest broker on loopback) gets no breaker: it protects nothing there, while an open
   * circuit would keep ingest off a restarted local broker for `openSeconds`; its reconnects
   * are paced by the callers' own backoff and by the rate limit.
   */
  #guard(name: string): Guard {
    let guard = this.#guards.get(name);
    if (!guard) {
      const { rateLimit, circuitBreaker } = this.#config;
      const destination = destinationOf(`tcp://${name}`);
      const localOnly = !isAllowed(this.#config.allowed, destination) &&
        isAllowed(this.#config.local ?? [], destination);
      guard = {
        bucket: new TokenBucket(rateLimit.perSecond, rateLimit.burst),
        breaker: localOnly ? null : new CircuitBreaker({
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

  /**
   * Appends one audit row. A failed append is logged, counted (outcome `audit_failed`) and
   * thrown as EgressAuditError: callers decide whether the call may go on (it may not).
   */
  async #record(
    purpose: string,
    destination: string,
    bytesOut: number,
    bytesIn: number,
    outcome: EgressOutcome,
    error?: unknown,
  ): Promise<void> {
    const message = error === undefined ? undefined : error instanceof Error ? error.message : String(error);
    this.#log.debug("egress.attempt", { destination, purpose, outcome, bytesOut, bytesIn, error: message });
    try {
      await this.#audit.append({ destination, purpose, bytesOut, bytesIn, outcome, error: message });
    } catch (auditError) {
      this.#observer?.attempt(destination, "audit_failed");
      this.#log.error("egress.audit_failed", { destination, purpose, outcome, error: auditError });
      throw new EgressAuditError(destination, { cause: auditError });
    }
    if (outcome !== "attempt") this.#observer?.attempt(destination, outcome);
  }
}

/** Bytes of a response body read at most; the rest is discarded unread. */
export const RESPONSE_LIMIT_BYTES = 64 * 1024;

/**
 * A Duplex whose construction waits for `open` (admission, audit, connect): Node streams buffer
 * writes until `_construct` calls back, so bytes written early leave only once it is allowed.
 */
class EgressStream extends Duplex {
  readonly #open: (signal: AbortSignal) => Promise<Socket>;
  readonly #abort = new AbortController();
  #socket: Socket | null = null;

  constructor(open: (signal: AbortSignal) => Promise<Socket>) {
    super({ allowHalfOpen: false });
    this.#open = open;
  }

  override _construct(callback: (error?: Error | null) => void): void {
    this.#open(this.#abort.signal).then((socket) => {
      this.#socket = socket;
      socket.on("data", (chunk: Uint8Array) => {
        if (!this.push(chunk)) socket.pause();
      });
      socket.on("end", () => this.push(null));
      socket.on("error", (error) => this.destroy(error));
      socket.on("close", () => this.destroy());
      callback();
    }, (error) => callback(error as Error));
  }

  override _write(chunk: Uint8Array, encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.#socket!.write(chunk, encoding, callback);
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.#socket!.end(() => callback());
  }

  override _read(): void {
    this.#socket?.resume();
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.#abort.abort(error ?? new Error("Stream destroyed"));
    this.#socket?.destroy();
    callback(error);
  }
}
