import { gunzipSync } from "node:zlib";
import { freePort } from "./ports.ts";

export interface ReceivedItem {
  id: string;
  kind: string;
  [field: string]: unknown;
}

export interface ReceivedBatch {
  source: string;
  batch: string;
  items: ReceivedItem[];
  gzip: boolean;
  authorization: string | null;
}

/** An HTTP collector on 127.0.0.1 that records every batch; it can go down and come back on the same port. */
export class Collector {
  readonly port: number;
  readonly batches: ReceivedBatch[] = [];
  /** Bytes received on the wire (after compression) and after decompression. */
  bytes = { wire: 0, json: 0 };
  /** Answer this status instead of 200 (e.g. 503) while set. */
  failWith: number | null = null;
  /** Accept requests and never answer while set (a hung collector). */
  hang = false;
  /** Answer 307 to this Location while set. */
  redirectTo: string | null = null;
  /** Requests answered or left hanging, redirects included. */
  requests = 0;
  #server: Deno.HttpServer | null = null;
  #released = Promise.withResolvers<void>();

  private constructor(port: number) {
    this.port = port;
  }

  static async create(options: { up?: boolean } = {}): Promise<Collector> {
    const collector = new Collector(await freePort());
    if (options.up ?? true) collector.start();
    return collector;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}/ingest`;
  }

  get destination(): string {
    return `127.0.0.1:${this.port}`;
  }

  start(): void {
    if (this.#server) return;
    this.#server = Deno.serve({ hostname: "127.0.0.1", port: this.port, onListen: () => {} }, async (request) => {
      this.requests++;
      if (this.hang) {
        await this.#released.promise;
        return new Response("released", { status: 503 });
      }
      if (this.redirectTo !== null) {
        return new Response(null, { status: 307, headers: { location: this.redirectTo } });
      }
      if (this.failWith !== null) return new Response("failing on purpose", { status: this.failWith });
      const raw = new Uint8Array(await request.arrayBuffer());
      const gzip = request.headers.get("content-encoding") === "gzip";
      const json = gzip ? gunzipSync(raw) : raw;
      this.bytes.wire += raw.length;
      this.bytes.json += json.length;
      const body = JSON.parse(new TextDecoder().decode(json));
      this.batches.push({ ...body, gzip, authorization: request.headers.get("authorization") });
      return Response.json({ ok: true });
    });
  }

  async stop(): Promise<void> {
    this.#released.resolve();
    this.#released = Promise.withResolvers<void>();
    const server = this.#server;
    this.#server = null;
    await server?.shutdown();
  }

  /** Every item received, in arrival order, duplicates included. */
  items(): ReceivedItem[] {
    return this.batches.flatMap((batch) => batch.items);
  }

  /** Items by id after dropping duplicates (as a receiver would). */
  unique(): Map<string, ReceivedItem> {
    return new Map(this.items().map((item) => [item.id, item]));
  }
}
