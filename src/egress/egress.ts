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
 * - A TLS socket is the same audited attempt with the handshake inside it: its rows carry the
 *   purpose `<purpose>+tls`, its `ok` row is written only once the peer's certificate and host
 *   name verified, and a failed verification is its `network_error` row with the reason.
 */
import { connect as netConnect, isIP, type Socket } from "node:net";
import { connect as tlsConnect } from "node:tls";
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

/** PEM material for a TLS socket (`Egress.socket`); read by the caller, so it may change between connects. */
export interface TlsMaterial {
  /** CA certificates to trust instead of the default roots (Deno's). */
  readonly ca?: string;
  /** Client certificate chain and its private key, for a peer that asks for one. */
  readonly cert?: string;
  readonly key?: string;
}

export interface SocketOptions {
  signal?: AbortSignal;
  /** Connect with TLS: the peer's certificate is verified against `ca` and the destination's host. */
  tls?: TlsMaterial;
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
   * `node:net` connect (or `node:tls` with `tls`) through the egress checks. Resolves once
   * connected (for TLS: handshake done, certificate and host name verified); bytes in and out are
   * audited when the socket closes, with the error that ended it. `signal` abandons the attempt
   * (and destroys the socket). A socket that dies before it is handed over (a TLS 1.3 server
   * refuses a client certificate only after the handshake) rejects with its error instead.
   */
  async socket(purpose: string, destination: Destination, options: SocketOptions = {}): Promise<Socket> {
    const { signal, tls } = options;
    signal?.throwIfAborted();
    const audited = tls ? `${purpose}+tls` : purpose;
    const name = await this.#admit(audited, destination);
    await this.#begin(audited, name, 0);
    let socket: Socket;
    let failure: Error | undefined;
    try {
      socket = await new Promise<Socket>((resolve, reject) => {
        signal?.throwIfAborted();
        const { host, port } = destination;
        const candidate: Socket = tls
          ? tlsConnect({
            host,
            port,
            // Node verifies the name against `servername`, or against `host` when it is an IP address.
            ...(isIP(host) === 0 ? { servername: host } : {}),
            ...(tls.ca === undefined ? {} : { ca: tls.ca }),
            ...(tls.cert === undefined ? {} : { cert: tls.cert, key: tls.key }),
          })
          : netConnect({ host, port });
        const onAbort = () => {
          candidate.destroy();
          reject(signal!.reason);
        };
        signal?.addEventListener("abort", onAbort, { once: true });
        candidate.once(tls ? "secureConnect" : "connect", () => {
          signal?.removeEventListener("abort", onAbort);
          resolve(candidate);
        });
        // Stays for the socket's life: the caller adds its own, and the `closed` row says why.
        candidate.on("error", (error) => {
          failure ??= error;
          signal?.removeEventListener("abort", onAbort);
          reject(error);
        });
      });
    } catch (error) {
      return await this.#callFailed(audited, name, 0, error);
    }
    this.#guard(name).breaker?.succeed();
    // Before the `ok` row's await, in which the peer may already hang up; the row queues behind `ok`.
    socket.once("close", () => {
      this.#record(audited, name, socket.bytesWritten, socket.bytesRead, "closed", failure).catch(() => {});
    });
    try {
      await this.#record(audited, name, 0, 0, "ok");
    } catch (error) {
      socket.destroy();
      throw error;
    }
    if (socket.destroyed) throw failure ?? new Error(`Connection to ${name} closed by the peer at once`);
    return socket;
  }

  /**
   * A stream for libraries that build their connection synchronously (mqtt.js's stream
   * builder). What the library writes is held until `socket()` has admitted, audited and
   * connected: nothing leaves before its `attempt` row is committed. A refused or failed
   * attempt destroys the stream with the error, so the library sees a connection error, and so
   * does a `tls` that rejects (its material could not be read: no attempt is made then).
   */
  socketSync(
    purpose: string,
    destination: Destination,
    options: { tls?: () => TlsMaterial | Promise<TlsMaterial> } = {},
  ): Duplex {
    const { tls } = options;
    return new EgressStream(async (signal) =>
      this.socket(purpose, destination, { signal, ...(tls ? { tls: await tls() } : {}) })
    );
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
