/**
 * The HTTP listener, with the connection bounds Deno.serve does not offer: node:http (llhttp in
 * Deno 2) gives header, whole-request and keep-alive timeouts and a parser error hook, so every
 * refusal below is a JSON answer and none can stop the process.
 *
 * Rules it keeps:
 * - At most `connections` sockets open; one more is answered 503 (JSON) and closed.
 * - Headers must arrive within `headersTimeoutMs`, the whole request within `requestTimeoutMs`
 *   (408), and an idle keep-alive socket is closed after `keepAliveTimeoutMs`.
 * - Malformed HTTP (request line, headers, chunk framing) is answered 400 (431 for headers too
 *   large) with a JSON body, never a bare status line.
 * - Running out of file descriptors is a refusal, not a silent stop: Deno 2.9.5's listener stops
 *   accepting for good after one failed accept() (EMFILE), with no 'error' event, so an
 *   AcceptWatchdog (./accept_watchdog.ts) probes it when idle, closes it while no descriptor is
 *   free (new connections are refused at once) and opens it again on the same address; measured
 *   by tests/descriptor_exhaustion_test.ts.
 * - A body is read as it arrives: memory per slow connection is what it has actually sent.
 * - With `tls`, it is node:https with the same bounds; a socket over the cap is closed before
 *   its handshake (it cannot be answered in clear), the handshake must end within
 *   `headersTimeoutMs`, and the certificate is reloaded on change.
 */
import { getRequestListener } from "@hono/node-server";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { createServer as createTlsServer } from "node:https";
import type { Socket } from "node:net";
import type { LimitsConfig } from "../config/config.ts";
import { limitKey } from "../limit_exceeded_error.ts";
import type { Logger } from "../observability/log.ts";
import { RateLimitedLog } from "../observability/rate_limited_log.ts";
import type { Metrics } from "../observability/metrics.ts";
import { AcceptWatchdog } from "./accept_watchdog.ts";
import { readTlsPair, type TlsFiles, watchTlsFiles } from "./tls_files.ts";

export type ConnectionLimits = Pick<
  LimitsConfig,
  "connections" | "headersTimeoutMs" | "requestTimeoutMs" | "keepAliveTimeoutMs"
>;

export interface HttpServerOptions {
  name: string;
  host: string;
  port: number;
  /** The manifest key the address comes from, named when it cannot be bound. */
  addressKey: string;
  limits: ConnectionLimits;
  log: Logger;
  metrics: Metrics;
  /** Serve HTTPS with these files (`spec.api.tls`), reloaded when they change. */
  tls?: TlsFiles | null;
}

export interface HttpServer {
  readonly port: number;
  /** Stops accepting, lets requests in flight finish for up to `graceMs`, then closes every socket. */
  close(graceMs: number): Promise<void>;
}

/** Binds `options.host:port` and serves `fetch`; rejects naming the address when it cannot bind. */
export function serveHttp(fetch: (request: Request) => Response | Promise<Response>, options: HttpServerOptions) {
  const { limits, log, metrics } = options;
  const bounds = {
    headersTimeout: limits.headersTimeoutMs,
    requestTimeout: limits.requestTimeoutMs,
    keepAliveTimeout: limits.keepAliveTimeoutMs,
    connectionsCheckingInterval: Math.min(1_000, limits.headersTimeoutMs),
    maxHeaderSize: 16 * 1024,
  };
  const tls = options.tls ?? null;
  // Throws naming spec.api.tls.* when the files cannot be used: the service does not start in clear.
  const pair = tls === null ? null : readTlsPair(tls);
  // The handshake counts against headersTimeoutMs: node:http's header timer starts only after it,
  // and node:tls's own default is 120 s, so silent sockets would hold every connection slot that long.
  const server: Server = pair === null
    ? createServer(bounds)
    : createTlsServer({ ...bounds, ...pair, handshakeTimeout: limits.headersTimeoutMs }) as Server;
  const listener = getRequestListener(fetch, { overrideGlobalObjects: false, hostname: options.host });
  // Sockets over the cap: answered 503 and closing; a request already parsed on one is not served.
  const refused = new WeakSet<Socket>();
  server.on("request", (request: IncomingMessage, response: ServerResponse) => {
    // The socket is already ending with its 503; the request is left unanswered and unserved.
    if (!refused.has(request.socket)) void listener(request, response);
  });
  let open = 0;
  let watchdog: AcceptWatchdog | null = null;
  server.on("connection", (socket: Socket) => {
    open++;
    socket.once("close", () => open--);
    if (open > limits.connections) {
      metrics.limitRefusals.inc({ limit: limitKey("connections") });
      if (tls !== null) return void socket.destroy();
      refused.add(socket);
      refuse(socket, 503, {
        error: "limit_exceeded",
        limit: limitKey("connections"),
        max: limits.connections,
        message: `More than ${limits.connections} connections are open; retry later`,
      });
    }
  });
  server.on("clientError", (error: Error & { code?: string }, socket: Socket) => {
    const [status, body] = clientErrorAnswer(error, limits);
    if (body.limit) metrics.limitRefusals.inc({ limit: body.limit });
    refuse(socket, status, body);
  });
  const refusals = new RateLimitedLog(log, 5_000);
  let stopWatching = () => {};
  if (tls !== null && pair !== null) {
    log.info("http.tls", { server: options.name, certificate: pair.fingerprint256, validTo: pair.validTo });
    server.on("tlsClientError", (error: Error & { code?: string }, socket: Socket) => {
      // The watchdog's probe closes without a ClientHello: not a client's failed handshake.
      if (watchdog?.isProbe(socket)) return void socket.destroy();
      metrics.tlsHandshakeFailures.inc({ server: options.name });
      refusals.warn("http.tls_handshake_failed", { server: options.name, error: error.message });
      socket.destroy();
    });
    stopWatching = watchTlsFiles(tls, (next) => {
      (server as unknown as { setSecureContext(pair: { cert: string; key: string }): void }).setSecureContext(next);
      metrics.tlsReloads.inc({ server: options.name, result: "loaded" });
      log.info("http.tls_reloaded", { server: options.name, certificate: next.fingerprint256, validTo: next.validTo });
    }, (error) => {
      metrics.tlsReloads.inc({ server: options.name, result: "failed" });
      log.error("http.tls_reload_failed", { server: options.name, error: error.message, kept: "the current pair" });
    });
  }
  return new Promise<HttpServer>((resolve, reject) => {
    const onListenError = (error: Error & { code?: string }) => {
      const where = `${options.host}:${options.port}`;
      const reason = error.code === "EADDRINUSE" ? "address in use" : error.message;
      reject(new Error(`Cannot listen on ${where} (${options.addressKey}): ${reason}`, { cause: error }));
    };
    server.once("error", onListenError);
    server.listen(options.port, options.host, () => {
      server.off("error", onListenError);
      const address = server.address();
      const port = typeof address === "object" && address ? address.port : options.port;
      log.info("http.listening", { server: options.name, address: `${options.host}:${port}` });
      // From here on it also holds the server's 'error' listener.
      watchdog = new AcceptWatchdog(server, {
        name: options.name,
        host: options.host,
        port,
        log,
        metrics,
        mayProbe: () => open < limits.connections,
      });
      resolve({
        port,
        close: (graceMs) => {
          watchdog?.stop();
          stopWatching();
          return closeServer(server, graceMs);
        },
      });
    });
  });
}

function clientErrorAnswer(
  error: Error & { code?: string },
  limits: ConnectionLimits,
): [number, { error: string; message: string; limit?: string; max?: number }] {
  switch (error.code) {
    case "ERR_HTTP_REQUEST_TIMEOUT":
      // node:http reports both timeouts with this one code; the message names both keys.
      return [408, {
        error: "limit_exceeded",
        limit: limitKey("requestTimeoutMs"),
        max: limits.requestTimeoutMs,
        message: `The request did not arrive in time (headers within ${limitKey("headersTimeoutMs")}: ` +
          `${limits.headersTimeoutMs} ms, the whole request within ${limitKey("requestTimeoutMs")}: ` +
          `${limits.requestTimeoutMs} ms)`,
      }];
    case "HPE_HEADER_OVERFLOW":
      return [431, { error: "headers_too_large", message: "Request headers are larger than 16 KiB" }];
    default:
      return [400, { error: "bad_request", message: `Malformed HTTP request: ${error.code ?? error.message}` }];
  }
}

function refuse(socket: Socket, status: number, body: Record<string, unknown>): void {
  if (socket.writable) {
    const text = JSON.stringify(body);
    socket.end(
      `HTTP/1.1 ${status} ${STATUS_TEXT[status] ?? "Error"}\r\nContent-Type: application/json\r\n` +
        `Content-Length: ${text.length}\r\nConnection: close\r\n${
          status === 503 ? "Retry-After: 1\r\n" : ""
        }\r\n${text}`,
    );
  }
  setTimeout(() => socket.destroy(), 1_000).unref?.();
}

const STATUS_TEXT: Record<number, string> = {
  400: "Bad Request",
  408: "Request Timeout",
  431: "Request Header Fields Too Large",
  503: "Service Unavailable",
};

async function closeServer(server: Server, graceMs: number): Promise<void> {
  const closed = new Promise<void>((resolve) => server.close(() => resolve()));
  server.closeIdleConnections();
  const forced = setTimeout(() => server.closeAllConnections(), graceMs);
  await closed;
  clearTimeout(forced);
}
