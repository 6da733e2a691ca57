import { gzipSync } from "node:zlib";
import type { ForwardingConfig } from "../config/config.ts";
import { destinationOf, formatDestination } from "../egress/allowlist.ts";
import type { Egress } from "../egress/egress.ts";
import type { SinkName } from "../store/outbox.ts";

/** A place batches go to; `send` resolves only once the receiver confirmed the batch. */
export interface Sink {
  readonly name: SinkName;
  readonly destination: string;
  /** Delivers one batch; `signal` (shutdown) aborts a delivery in flight, which then fails. */
  send(batchKey: string, itemBodies: readonly string[], signal: AbortSignal): Promise<void>;
  close(): Promise<void>;
}

/** The receiver answered but did not accept the batch. */
export class SinkRejectedError extends Error {
  readonly status: number;
  constructor(status: number, detail: string) {
    super(`Sink refused the batch: HTTP ${status}${detail ? `: ${detail}` : ""}`);
    this.name = "SinkRejectedError";
    this.status = status;
  }
}

const GZIP_ABOVE_BYTES = 1024;

/** Batch body: `{"source","batch","items":[...]}`; each item body is already JSON. */
export function batchBody(source: string, batchKey: string, itemBodies: readonly string[]): string {
  return `{"source":${JSON.stringify(source)},"batch":${JSON.stringify(batchKey)},"items":[${itemBodies.join(",")}]}`;
}

/** POSTs JSON batches to the collector through the egress; gzip above 1 KiB; bearer token from the env. */
export class HttpSink implements Sink {
  readonly name = "http" as const;
  readonly destination: string;
  readonly #config: NonNullable<ForwardingConfig["http"]>;
  readonly #source: string;
  readonly #egress: Egress;
  readonly #token: string | undefined;

  constructor(config: ForwardingConfig, deps: { egress: Egress; token?: string }) {
    this.#config = config.http!;
    this.#source = config.source;
    this.#egress = deps.egress;
    this.#token = deps.token;
    this.destination = formatDestination(destinationOf(this.#config.url));
  }

  async send(batchKey: string, itemBodies: readonly string[], signal: AbortSignal): Promise<void> {
    const json = batchBody(this.#source, batchKey, itemBodies);
    const headers: Record<string, string> = { "content-type": "application/json", "idempotency-key": batchKey };
    if (this.#token) headers.authorization = `Bearer ${this.#token}`;
    let body: Uint8Array<ArrayBuffer> | string = json;
    if (this.#config.gzip && json.length > GZIP_ABOVE_BYTES) {
      body = new Uint8Array(gzipSync(json));
      headers["content-encoding"] = "gzip";
    }
    const response = await this.#egress.fetch("forward", this.#config.url, {
      method: "POST",
      headers,
      body,
      signal: AbortSignal.any([signal, AbortSignal.timeout(this.#config.timeoutMs)]),
    });
    if (response.status < 200 || response.status >= 300) {
      throw new SinkRejectedError(response.status, (await response.text()).slice(0, 200));
    }
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}
