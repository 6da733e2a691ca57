import { createServer, type Server, type Socket } from "node:net";
import { Buffer } from "node:buffer";
import { Aedes } from "aedes";
import { join } from "node:path";
import { freePort } from "./ports.ts";

/** A real MQTT broker on loopback: aedes in-process, or mosquitto when OUTPOST_TEST_BROKER=mosquitto. */
export interface TestBroker {
  readonly url: string;
  readonly port: number;
  readonly kind: string;
  close(): Promise<void>;
}

export const BROKER_KIND = Deno.env.get("OUTPOST_TEST_BROKER") ?? "aedes";

export async function startBroker(port?: number): Promise<TestBroker> {
  const chosen = port ?? await freePort();
  return BROKER_KIND === "mosquitto" ? await startMosquitto(chosen) : await startAedes(chosen);
}

async function startAedes(port: number): Promise<TestBroker> {
  const broker = await Aedes.createBroker();
  const server: Server = createServer((socket) => broker.handle(readingAll(socket)));
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, "127.0.0.1", () => resolve());
  });
  return {
    url: `mqtt://127.0.0.1:${port}`,
    port,
    kind: "aedes",
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        broker.close();
        // aedes keeps client sockets open; closing the broker ends them.
      }),
  };
}

/**
 * aedes reads with `readable` + `read(null)`, expecting all buffered bytes. Deno's node:net socket
 * can return only the first buffered chunk; the rest then waits for a `readable` event that never
 * comes, and a large PUBLISH (about 180 KB and more) stalls for good. Reading until empty fixes it.
 */
function readingAll(socket: Socket): Socket {
  const read = socket.read.bind(socket);
  socket.read = (size?: number) => {
    if (size !== undefined && size !== null) return read(size);
    const chunks: Buffer[] = [];
    for (let chunk = read(); chunk !== null; chunk = read()) chunks.push(chunk);
    return chunks.length === 0 ? null : chunks.length === 1 ? chunks[0] : Buffer.concat(chunks);
  };
  return socket;
}

async function startMosquitto(port: number): Promise<TestBroker> {
  const dir = await Deno.makeTempDir({ prefix: "outpost-mosquitto-" });
  const conf = join(dir, "mosquitto.conf");
  await Deno.writeTextFile(
    conf,
    [
      `listener ${port} 127.0.0.1`,
      "allow_anonymous true",
      "persistence true",
      `persistence_location ${dir}/`,
      "max_queued_messages 1000000",
      "max_inflight_messages 0",
      "max_queued_bytes 0",
      "log_dest none",
    ].join("\n") + "\n",
  );
  const process = new Deno.Command("mosquitto", { args: ["-c", conf], stdout: "null", stderr: "piped" }).spawn();
  const deadline = Date.now() + 5_000;
  while (true) {
    try {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      conn.close();
      break;
    } catch (error) {
      if (Date.now() > deadline) throw new Error(`mosquitto did not start: ${error}`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
  return {
    url: `mqtt://127.0.0.1:${port}`,
    port,
    kind: "mosquitto",
    async close() {
      try {
        process.kill("SIGTERM");
      } catch { /* gone */ }
      await process.status;
      await process.stderr.cancel();
      await Deno.remove(dir, { recursive: true });
    },
  };
}
