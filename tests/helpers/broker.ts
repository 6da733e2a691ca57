import { createServer, type Server, type Socket } from "node:net";
import { createServer as createTlsServer } from "node:tls";
import { Buffer } from "node:buffer";
import { Aedes, type AuthenticateError } from "aedes";
import { join } from "node:path";
import { freePort } from "./ports.ts";

/** A real MQTT broker on loopback: aedes in-process, or mosquitto when OUTPOST_TEST_BROKER=mosquitto. */
export interface TestBroker {
  readonly url: string;
  readonly port: number;
  readonly kind: string;
  /** Client ids the broker let in, in order (with `users`: each one logged in). */
  connected(): string[];
  close(): Promise<void>;
}

export type BrokerKind = "aedes" | "mosquitto";

export interface BrokerOptions {
  /** Which broker; OUTPOST_TEST_BROKER or aedes when absent. */
  kind?: BrokerKind;
  /** A loopback address to listen on (127.0.0.1 when absent). */
  host?: string;
  /** Logins the broker accepts (user → password); anyone else, anonymous too, is refused. */
  users?: Record<string, string>;
  /** Serve mqtts:// with these PEM files; `requireClientCert` asks for a client certificate signed by `caFile`. */
  tls?: { certFile: string; keyFile: string; caFile?: string; requireClientCert?: boolean };
}

export const BROKER_KIND: BrokerKind = Deno.env.get("OUTPOST_TEST_BROKER") === "mosquitto" ? "mosquitto" : "aedes";

/** Where mosquitto is (PATH, then Debian's /usr/sbin), or null: tests that need it are then ignored. */
export const MOSQUITTO: string | null = findProgram("mosquitto");

export async function startBroker(port?: number, options: BrokerOptions = {}): Promise<TestBroker> {
  const chosen = port ?? await freePort();
  return (options.kind ?? BROKER_KIND) === "mosquitto"
    ? await startMosquitto(chosen, options)
    : await startAedes(chosen, options);
}

async function startAedes(port: number, options: BrokerOptions): Promise<TestBroker> {
  const { users, tls } = options;
  const host = options.host ?? "127.0.0.1";
  const connected: string[] = [];
  const broker = await Aedes.createBroker(
    users
      ? {
        authenticate: (_client, username, password, done) => {
          if (username !== undefined && users[username] !== undefined && users[username] === password?.toString()) {
            return done(null, true);
          }
          const error = new Error("Bad username or password") as AuthenticateError;
          error.returnCode = 4;
          done(error, null);
        },
      }
      : {},
  );
  broker.on("clientReady", (client) => connected.push(client.id));
  const server: Server = tls
    ? createTlsServer({
      cert: await Deno.readTextFile(tls.certFile),
      key: await Deno.readTextFile(tls.keyFile),
      ...(tls.caFile ? { ca: await Deno.readTextFile(tls.caFile) } : {}),
      requestCert: tls.requireClientCert ?? false,
      rejectUnauthorized: tls.requireClientCert ?? false,
    }, (socket) => broker.handle(readingAll(socket)))
    : createServer((socket) => broker.handle(readingAll(socket)));
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => resolve());
  });
  return {
    url: `${tls ? "mqtts" : "mqtt"}://${host}:${port}`,
    port,
    kind: "aedes",
    connected: () => [...connected],
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

async function startMosquitto(port: number, options: BrokerOptions): Promise<TestBroker> {
  if (MOSQUITTO === null) throw new Error("mosquitto is not installed");
  const { users, tls } = options;
  const host = options.host ?? "127.0.0.1";
  const dir = await Deno.makeTempDir({ prefix: "outpost-mosquitto-" });
  const conf = join(dir, "mosquitto.conf");
  const passwords = join(dir, "passwords");
  if (users) {
    await Deno.writeTextFile(passwords, "");
    for (const [user, password] of Object.entries(users)) {
      const result = await new Deno.Command(findProgram("mosquitto_passwd") ?? "mosquitto_passwd", {
        args: ["-b", passwords, user, password],
        stdout: "null",
        stderr: "piped",
      }).output();
      if (!result.success) throw new Error(`mosquitto_passwd failed: ${new TextDecoder().decode(result.stderr)}`);
    }
  }
  await Deno.writeTextFile(
    conf,
    [
      `listener ${port} ${host}`,
      // Run as root (CI containers), mosquitto would switch to its own user and lose the temp dir.
      "user root",
      users ? `password_file ${passwords}` : "allow_anonymous true",
      ...(users ? ["allow_anonymous false"] : []),
      ...(tls
        ? [
          `certfile ${tls.certFile}`,
          `keyfile ${tls.keyFile}`,
          ...(tls.caFile ? [`cafile ${tls.caFile}`] : []),
          `require_certificate ${tls.requireClientCert ? "true" : "false"}`,
        ]
        : []),
      "persistence true",
      `persistence_location ${dir}/`,
      "max_queued_messages 1000000",
      "max_inflight_messages 0",
      "max_queued_bytes 0",
      "log_dest stderr",
      "log_type notice",
      "connection_messages true",
    ].join("\n") + "\n",
  );
  const process = new Deno.Command(MOSQUITTO, { args: ["-c", conf], stdout: "null", stderr: "piped" }).spawn();
  let log = "";
  const decoder = new TextDecoder();
  const drained = (async () => {
    for await (const chunk of process.stderr) log += decoder.decode(chunk, { stream: true });
  })();
  const deadline = Date.now() + 5_000;
  while (true) {
    try {
      const conn = await Deno.connect({ hostname: host, port });
      conn.close();
      break;
    } catch (error) {
      if (Date.now() > deadline) throw new Error(`mosquitto did not start: ${error}\n${log}`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
  return {
    url: `${tls ? "mqtts" : "mqtt"}://${host}:${port}`,
    port,
    kind: "mosquitto",
    // "New client connected from 127.0.0.1:50000 as outpost-test (p2, c0, k5, u'outpost')."
    connected: () => [...log.matchAll(/New client connected from \S+ as (\S+) /g)].map((match) => match[1]),
    async close() {
      try {
        process.kill("SIGTERM");
      } catch { /* gone */ }
      await process.status;
      await drained;
      await Deno.remove(dir, { recursive: true });
    },
  };
}

function findProgram(name: string): string | null {
  const path = (() => {
    try {
      return Deno.env.get("PATH") ?? "";
    } catch {
      return "";
    }
  })();
  for (const dir of [...path.split(":").filter(Boolean), "/usr/sbin", "/usr/bin"]) {
    try {
      if (Deno.statSync(join(dir, name)).isFile) return join(dir, name);
    } catch { /* not there */ }
  }
  return null;
}
