/**
 * Keeps an HTTP listener accepting after the process has run out of file descriptors.
 *
 * Why it exists: in Deno 2.9.5, node:net's listener is deno_core's `uv_compat` on tokio. Its poll
 * drops an accept() error (`if let Poll::Ready(Ok(..)) = listener.poll_accept(cx)` in
 * libs/core/uv_compat/tcp.rs), so JS is never told: no 'error' event. Observed (strace, and a
 * counter on accept4): after that one EMFILE, accept4 is never called on the listener again, and
 * the kernel goes on queueing connections nobody accepts, for good, even once descriptors are free.
 *
 * Rules it keeps:
 * - Any accepted connection proves the listener alive; while connections arrive it does nothing.
 * - Once `TICK_MS` pass without one it connects to the listener's own address (a probe: never
 *   leaves the device, sends nothing) and expects it accepted within `PROBE_DEADLINE_MS`; while
 *   nothing but its own probes arrive, it probes once per `IDLE_PROBE_MS`. Measured on an idle
 *   service: 0.24-0.29 s of CPU a minute against 0.16-0.17 s without the watchdog.
 * - Probe cannot get a descriptor (EMFILE, ENFILE): the listener is closed, so new connections
 *   are refused at once rather than queued where no one will accept them; it is opened again
 *   every `FAST_INTERVAL_MS` until that succeeds (counted: descriptors_exhausted, reopen_failed).
 * - Probe not accepted in time, or refused, twice in a row with nothing accepted in between: the
 *   listener is closed and opened again on the same address (counted: accept_stalled, reopened).
 *   Connections already accepted are not touched. One miss is not enough: under a heavy load the
 *   event loop can deliver a probe's connection late without any single stall that shows on a
 *   timer, and reopening then resets every connection queued on the listener. A real stall is
 *   permanent, so the second probe costs only its own half second.
 * - A probe proves nothing, and is repeated, unless the event loop turned throughout its window:
 *   a timer ticking every `PULSE_MS` must never have been more than `LATE_MS` late. A loop kept
 *   busy by synchronous work (the libSQL and onnxruntime calls, 30 times slower under qemu) runs
 *   its timers and its I/O late together, and a missed probe then says nothing of the listener.
 *   After `MAX_INCONCLUSIVE` such probes in a row a miss counts anyway: a loop kept that busy for
 *   seconds (back-to-back scoring passes under qemu) must not hide a real stall for as long as
 *   the load lasts.
 * - No probe while the connection cap is full (it would be refused and counted as a refusal).
 * - Each episode logs one warning when it starts (rate limited) and `http.accepting` when a probe
 *   is accepted again.
 */
import { connect, Server as NetServer, type Socket } from "node:net";
import type { Server } from "node:http";
import type { Logger } from "../observability/log.ts";
import type { Metrics } from "../observability/metrics.ts";
import { RateLimitedLog } from "../observability/rate_limited_log.ts";

/** How often it looks; a listener that accepted nothing for this long is probed. */
export const TICK_MS = 500;
/** Probe period while only probes have been accepted. */
export const IDLE_PROBE_MS = 2_000;
/** Probe period while the listener is closed or was found not accepting. */
export const FAST_INTERVAL_MS = 250;
/** How long an accepted probe may take to reach the 'connection' handler. */
export const PROBE_DEADLINE_MS = 500;
/** A pulse later than this means the event loop was blocked: the probe proves nothing. */
const LATE_MS = 250;
/** The pulse that watches the event loop while a probe waits. */
const PULSE_MS = 50;
/** Probes in a row that may prove nothing before a miss counts whatever the loop did (about 6 s). */
const MAX_INCONCLUSIVE = 8;
/** How long a finished probe's address is remembered, to recognise its server side's late events. */
const PROBE_MEMORY_MS = 5_000;

const DESCRIPTOR_ERRORS = new Set(["EMFILE", "ENFILE"]);

type ProbeResult = "accepted" | "exhausted" | "not_accepted" | "inconclusive" | "failed";

export interface AcceptWatchdogOptions {
  /** The server's name in logs and metrics. */
  name: string;
  /** The address it listens on (and probes: a wildcard address reaches this host). */
  host: string;
  port: number;
  log: Logger;
  metrics: Metrics;
  /** False while a probe would be turned away at the connection cap. */
  mayProbe(): boolean;
}

export class AcceptWatchdog {
  readonly #server: Server;
  readonly #options: AcceptWatchdogOptions;
  readonly #warnings: RateLimitedLog;
  readonly #errors: RateLimitedLog;
  /** Probe addresses (`address:port` as the server sees them) and when they may be forgotten. */
  readonly #probes = new Map<string, number>();
  #lastAccepted = performance.now();
  /** When the last probe was accepted: `#lastAccepted` equal to it means nothing else came since. */
  #lastProbeAccepted = -Infinity;
  #onAccepted: (() => void) | null = null;
  #open = true;
  #troubleSince: number | null = null;
  /** When a probe was last not accepted, until a probe or a connection is accepted. */
  #missedAt: number | null = null;
  #reopening = false;
  /** Probes in a row that proved nothing (the loop ran late). */
  #inconclusive = 0;
  #stopped = false;
  #timer: ReturnType<typeof setTimeout> | null = null;

  constructor(server: Server, options: AcceptWatchdogOptions) {
    this.#server = server;
    this.#options = options;
    this.#warnings = new RateLimitedLog(options.log, 5_000);
    this.#errors = new RateLimitedLog(options.log, 5_000);
    server.on("connection", () => {
      this.#lastAccepted = performance.now();
      this.#onAccepted?.();
    });
    // Never without an 'error' listener: an unheard 'error' would end the process.
    server.on("error", (error: Error & { code?: string }) => {
      if (this.#reopening) return; // reported by #reopen
      this.#errors.warn("http.server_error", { server: options.name, code: error.code, error: error.message });
    });
    this.#schedule(TICK_MS);
  }

  /** Whether `socket` (or the raw socket under a TLS socket) is one of this watchdog's probes. */
  isProbe(socket: Socket): boolean {
    const raw = (socket as Socket & { _parent?: Socket })._parent ?? socket;
    return this.#probes.has(`${raw.remoteAddress}:${raw.remotePort}`);
  }

  /** Stops probing; the listener is left as it is (closed by the server's own close). */
  stop(): void {
    this.#stopped = true;
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timer = null;
  }

  #schedule(ms: number): void {
    if (this.#stopped) return;
    const timer = setTimeout(() => void this.#tick(), ms);
    Deno.unrefTimer(timer);
    this.#timer = timer;
  }

  async #tick(): Promise<void> {
    this.#timer = null;
    const { name } = this.#options;
    if (!this.#open) {
      await this.#reopen(); // verified by the next probe
      return this.#schedule(FAST_INTERVAL_MS);
    }
    const now = performance.now();
    if (this.#missedAt !== null && this.#lastAccepted > this.#missedAt) this.#missedAt = null;
    if (this.#troubleSince === null && this.#missedAt === null) {
      const busy = now - this.#lastAccepted < TICK_MS;
      const idleAndChecked = this.#lastAccepted <= this.#lastProbeAccepted &&
        now - this.#lastProbeAccepted < IDLE_PROBE_MS;
      if (busy || idleAndChecked || !this.#options.mayProbe()) return this.#schedule(TICK_MS);
    }
    const result = await this.#probe(this.#inconclusive >= MAX_INCONCLUSIVE);
    if (this.#stopped) return;
    // A miss keeps the count, so that the second miss of a pair is judged the same way.
    if (result === "inconclusive") this.#inconclusive++;
    else if (result !== "not_accepted") this.#inconclusive = 0;
    switch (result) {
      case "accepted":
        this.#missedAt = null;
        this.#lastProbeAccepted = this.#lastAccepted;
        if (this.#troubleSince !== null) {
          this.#options.log.info("http.accepting", {
            server: name,
            afterMs: Math.round(performance.now() - this.#troubleSince),
          });
          this.#troubleSince = null;
        }
        return this.#schedule(TICK_MS);
      case "inconclusive":
        return this.#schedule(FAST_INTERVAL_MS);
      case "failed":
        return this.#schedule(IDLE_PROBE_MS);
      case "exhausted":
        this.#trouble("descriptors_exhausted", "http.descriptors_exhausted", {
          action: "listener closed: connections are refused until a descriptor is free",
        });
        this.#close();
        return this.#schedule(FAST_INTERVAL_MS);
      case "not_accepted":
        if (this.#missedAt === null) {
          this.#missedAt = performance.now();
          return this.#schedule(0);
        }
        this.#missedAt = null;
        this.#trouble("accept_stalled", "http.accept_stalled", {
          action: "listener reopened",
          sinceLastAcceptMs: Math.round(performance.now() - this.#lastAccepted),
        });
        this.#close();
        await this.#reopen();
        return this.#schedule(FAST_INTERVAL_MS);
    }
  }

  #trouble(event: string, logEvent: string, fields: Record<string, unknown>): void {
    const { name, metrics } = this.#options;
    metrics.httpListenerEvents.inc({ server: name, event });
    this.#troubleSince ??= performance.now();
    this.#warnings.warn(logEvent, { server: name, ...fields });
  }

  /** Closes the listening socket only; accepted connections stay. */
  #close(): void {
    this.#open = false;
    if (this.#server.listening) NetServer.prototype.close.call(this.#server);
  }

  /** Listens again on the same address; true when it does. */
  #reopen(): Promise<boolean> {
    const { name, host, port, metrics } = this.#options;
    this.#reopening = true;
    return new Promise<boolean>((resolve) => {
      const settle = (error: (Error & { code?: string }) | null) => {
        this.#server.off("listening", onListening);
        this.#server.off("error", onError);
        this.#reopening = false;
        if (error === null) {
          this.#open = true;
          this.#lastAccepted = performance.now();
          metrics.httpListenerEvents.inc({ server: name, event: "reopened" });
        } else {
          metrics.httpListenerEvents.inc({ server: name, event: "reopen_failed" });
          this.#errors.warn("http.listener_reopen_failed", { server: name, code: error.code, error: error.message });
        }
        resolve(error === null);
      };
      const onListening = () => settle(null);
      const onError = (error: Error) => settle(error);
      this.#server.once("listening", onListening);
      this.#server.once("error", onError);
      try {
        this.#server.listen(port, host);
      } catch (error) {
        settle(error as Error);
      }
    });
  }

  /** One connection to the listener's own address; see the rules at the top. */
  #probe(evenIfLate: boolean): Promise<ProbeResult> {
    const { host, port, name } = this.#options;
    const now = performance.now();
    for (const [key, forgetAt] of this.#probes) if (forgetAt < now) this.#probes.delete(key);
    return new Promise<ProbeResult>((resolve) => {
      let socket: Socket | null = null;
      let accepted = false;
      let connected = false;
      // The longest the event loop went without running the pulse, up to the deadline.
      let pulseDue = now + PULSE_MS;
      let worstLateness = 0;
      let pulse: ReturnType<typeof setTimeout>;
      const beat = () => {
        const at = performance.now();
        worstLateness = Math.max(worstLateness, at - pulseDue);
        pulseDue = at + PULSE_MS;
        pulse = setTimeout(beat, PULSE_MS);
        Deno.unrefTimer(pulse);
      };
      pulse = setTimeout(beat, PULSE_MS);
      Deno.unrefTimer(pulse);
      const finish = (result: ProbeResult) => {
        clearTimeout(deadline);
        clearTimeout(pulse);
        this.#onAccepted = null;
        socket?.destroy();
        resolve(result);
      };
      // The server usually sees the probe before the probe sees its own 'connect'; the probe is
      // closed once both happened, so that its address is known when its server side ends.
      this.#onAccepted = () => {
        accepted = true;
        if (connected) finish("accepted");
      };
      const deadline = setTimeout(() => {
        if (accepted) return finish("accepted");
        worstLateness = Math.max(worstLateness, performance.now() - Math.min(pulseDue, now + PROBE_DEADLINE_MS));
        finish(worstLateness > LATE_MS && !evenIfLate ? "inconclusive" : "not_accepted");
      }, PROBE_DEADLINE_MS);
      Deno.unrefTimer(deadline);
      try {
        socket = connect({ host, port });
      } catch (error) {
        this.#errors.warn("http.probe_failed", { server: name, error: (error as Error).message });
        return finish("failed");
      }
      const probe = socket;
      probe.once("connect", () => {
        connected = true;
        this.#probes.set(`${probe.localAddress}:${probe.localPort}`, performance.now() + PROBE_MEMORY_MS);
        if (accepted) finish("accepted");
      });
      probe.once("error", (error: Error & { code?: string }) => {
        if (DESCRIPTOR_ERRORS.has(error.code ?? "")) return finish("exhausted");
        if (error.code === "ECONNREFUSED") return finish("not_accepted");
        this.#errors.warn("http.probe_failed", { server: name, code: error.code, error: error.message });
        finish("failed");
      });
    });
  }
}
