/**
 * Running out of file descriptors is a refusal, not death: the real program, its descriptor limit
 * lowered with `prlimit --pid` once it is ready, is flooded with TCP connections until accept()
 * fails with EMFILE; once the flood lets go, the API must answer again within a bound, the process
 * must still be up, and /metrics must count what happened.
 *
 * Deno 2.9.5's node:net listener stops accepting for good after one EMFILE (no 'error' event, the
 * kernel keeps queueing connections nobody accepts); src/api/accept_watchdog.ts notices and
 * reopens it. Without that, every test here fails on the /healthz deadline.
 */
import assert from "node:assert/strict";
import { connect, type Socket } from "node:net";
import { join } from "node:path";
import { eventually } from "./helpers/eventually.ts";
import { PROJECT_ROOT, startOutpost, writeManifest } from "./helpers/outpost_process.ts";

/** Descriptors left to the process above those it holds when the limit is lowered. */
const HEADROOM = 40;
/** Connections opened at once: well past the headroom, well under the listen backlog (511). */
const FLOOD = 200;
/**
 * How long after the flood lets go the API must answer again. Measured: about 0.27 s when the
 * watchdog had already closed the listener, about 1.5 s when it still had to notice the stall.
 */
// A stall is confirmed by a second probe before the listener is reopened (src/api/accept_watchdog.ts).
const RECOVERY_BOUND_MS = 4_000;

const TLS = join(PROJECT_ROOT, "tests", "fixtures", "tls");

const prlimitMissing = new Deno.Command("prlimit", { args: ["--version"], stdout: "null", stderr: "null" })
  .output().then((output) => !output.success, () => true);

/** Descriptors the process holds (`ls`, since Deno's permissions keep /proc to --allow-all). */
async function openDescriptors(pid: number): Promise<number> {
  const output = await new Deno.Command("ls", { args: [`/proc/${pid}/fd`] }).output();
  assert.ok(output.success, new TextDecoder().decode(output.stderr));
  return new TextDecoder().decode(output.stdout).split("\n").filter(Boolean).length;
}

/** Lowers the running process's RLIMIT_NOFILE (soft and hard) to what it holds plus `headroom`. */
async function squeezeDescriptors(pid: number, headroom: number): Promise<number> {
  const limit = await openDescriptors(pid) + headroom;
  const output = await new Deno.Command("prlimit", { args: [`--pid=${pid}`, `--nofile=${limit}:${limit}`] }).output();
  assert.ok(output.success, new TextDecoder().decode(output.stderr));
  return limit;
}

/** Opens `count` connections that send nothing; resolves with the sockets once each connected or failed. */
async function flood(port: number, count: number, host = "127.0.0.1"): Promise<Socket[]> {
  const sockets = await Promise.all(Array.from({ length: count }, () =>
    new Promise<Socket>((resolve) => {
      const socket = connect({ host, port });
      socket.on("error", () => {}); // reset by the server when it closes a refused or queued socket
      socket.setTimeout(3_000, () => resolve(socket));
      socket.once("connect", () => resolve(socket));
      socket.once("close", () => resolve(socket));
    })));
  return sockets;
}

/** Whether a new connection is refused (or reset) within `withinMs` rather than left hanging. */
function refusedQuickly(port: number, withinMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: "127.0.0.1", port });
    const done = (refused: boolean) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(refused);
    };
    const timer = setTimeout(() => done(false), withinMs);
    socket.once("error", () => done(true));
    socket.once("close", () => done(true));
  });
}

/**
 * An HTTP client that opens a new connection for every request: a pooled keep-alive connection,
 * accepted before the exhaustion, would answer while the listener accepts nothing.
 */
function freshConnections(caCerts: string[] = []): Deno.HttpClient {
  return Deno.createHttpClient({ poolMaxIdlePerHost: 0, caCerts });
}

/** GET `url` until it answers 200 (each try bounded to 1 s); returns ms taken, or fails after `boundMs`. */
async function msUntilServed(url: string, boundMs: number, client: Deno.HttpClient): Promise<number> {
  const start = performance.now();
  while (performance.now() - start < boundMs) {
    try {
      const response = await fetch(url, { signal: AbortSignal.timeout(1_000), client });
      await response.body?.cancel();
      if (response.status === 200) return performance.now() - start;
    } catch { /* refused, reset or timed out: try again */ }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`${url} did not answer 200 within ${boundMs} ms after descriptors were free again`);
}

function listenerEvents(metricsText: string, server: string): Record<string, number> {
  const events: Record<string, number> = {};
  const pattern = new RegExp(`^outpost_http_listener_events_total\\{server="${server}",event="(\\w+)"\\} (\\d+)`, "gm");
  for (const [, event, value] of metricsText.matchAll(pattern)) events[event] = Number(value);
  return events;
}

function stillRunning(process: Deno.ChildProcess): Promise<boolean> {
  return Promise.race([process.status.then(() => false), new Promise<boolean>((r) => setTimeout(() => r(true), 0))]);
}

/**
 * Waits for the release's self-confirmation (written 3 s after readiness): that write failing on
 * EMFILE is an unhandled rejection that ends the process, a separate defect this test steps around.
 */
async function confirmed(dataDir: string): Promise<void> {
  await eventually(() => Deno.stat(join(dataDir, "release-confirmation.json")).then(() => true, () => false), Boolean);
}

/** Polls until the process holds every descriptor its limit allows: its accept() has met EMFILE. */
async function exhausted(pid: number, limit: number): Promise<void> {
  await eventually(() => openDescriptors(pid), (count) => count >= limit, 5_000);
}

Deno.test({
  name: "descriptors exhausted by a flood: new connections are refused, not queued for good; " +
    "the API answers again soon after the flood lets go",
  ignore: await prlimitMissing,
  async fn() {
    const dir = await Deno.makeTempDir();
    const outpost = await startOutpost(await writeManifest(dir));
    const port = Number(new URL(outpost.url).port);
    const client = freshConnections();
    let sockets: Socket[] = [];
    try {
      await confirmed(outpost.dataDir);
      const limit = await squeezeDescriptors(outpost.process.pid, HEADROOM);
      sockets = await flood(port, FLOOD);
      await exhausted(outpost.process.pid, limit);
      // While no descriptor is free the API port refuses at once instead of queueing in a dead backlog.
      const refused = await eventually(() => refusedQuickly(port, 500), Boolean, 5_000);
      assert.ok(refused);
      assert.ok(await stillRunning(outpost.process), "the process is up while out of descriptors");

      for (const socket of sockets) socket.destroy();
      const ms = await msUntilServed(`${outpost.url}/healthz`, RECOVERY_BOUND_MS, client);
      const metricsText = await (await fetch(`${outpost.url}/metrics`, { client })).text();
      const events = listenerEvents(metricsText, "api");
      console.log(
        `limit ${limit} descriptors, ${FLOOD} connections: /healthz 200 ${ms.toFixed(0)} ms after ` +
          `release; listener events ${JSON.stringify(events)}`,
      );
      assert.ok((events.descriptors_exhausted ?? 0) >= 1, JSON.stringify(events));
      assert.ok((events.reopened ?? 0) >= 1, JSON.stringify(events));
      assert.match(outpost.log(), /"event":"http\.descriptors_exhausted"/);
      assert.ok(await stillRunning(outpost.process));
    } finally {
      for (const socket of sockets) socket.destroy();
      client.close();
      assert.equal(await outpost.stop(), 0);
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "a listener that stopped accepting during a short exhaustion is noticed and reopened on its own address",
  ignore: await prlimitMissing,
  async fn() {
    const dir = await Deno.makeTempDir();
    // Another loopback address than 127.0.0.1: the probe and the reopened listener follow the manifest.
    const path = await writeManifest(dir);
    await Deno.writeTextFile(path, (await Deno.readTextFile(path)).replace("listen: 127.0.0.1:", "listen: 127.0.0.2:"));
    const outpost = await startOutpost(path);
    const port = Number(new URL(outpost.url).port);
    assert.equal(new URL(outpost.url).hostname, "127.0.0.2");
    const client = freshConnections();
    let sockets: Socket[] = [];
    try {
      await confirmed(outpost.dataDir);
      const limit = await squeezeDescriptors(outpost.process.pid, HEADROOM);
      sockets = await flood(port, FLOOD, "127.0.0.2");
      await exhausted(outpost.process.pid, limit);
      // Let go at once: descriptors are free again before any probe saw them exhausted.
      for (const socket of sockets) socket.destroy();
      const ms = await msUntilServed(`${outpost.url}/healthz`, RECOVERY_BOUND_MS, client);
      const events = listenerEvents(await (await fetch(`${outpost.url}/metrics`, { client })).text(), "api");
      console.log(`/healthz 200 ${ms.toFixed(0)} ms after release; listener events ${JSON.stringify(events)}`);
      assert.ok((events.accept_stalled ?? 0) + (events.descriptors_exhausted ?? 0) >= 1, JSON.stringify(events));
      assert.ok(await stillRunning(outpost.process));
    } finally {
      for (const socket of sockets) socket.destroy();
      client.close();
      assert.equal(await outpost.stop(), 0);
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "over TLS: idle probes are not counted as failed handshakes, and the listener recovers from exhaustion",
  ignore: await prlimitMissing,
  async fn() {
    const dir = await Deno.makeTempDir();
    const path = await writeManifest(dir);
    const text = await Deno.readTextFile(path);
    await Deno.writeTextFile(
      path,
      text.replace(/^( {4}listen: .*)$/m, `$1\n    tls: { certFile: ${TLS}/server.pem, keyFile: ${TLS}/server.key }`),
    );
    const outpost = await startOutpost(path, { waitReady: false });
    const port = Number(new URL(outpost.url).port);
    const https = `https://127.0.0.1:${port}`;
    const client = freshConnections([await Deno.readTextFile(join(TLS, "ca.pem"))]);
    let sockets: Socket[] = [];
    try {
      await msUntilServed(`${https}/readyz`, 20_000, client);
      // Idle for a few probe periods: a probe is a TCP connection that never says ClientHello.
      await new Promise((resolve) => setTimeout(resolve, 3_000));
      const idle = await (await fetch(`${https}/metrics`, { client })).text();
      assert.doesNotMatch(idle, /^outpost_tls_handshake_failures_total\{server="api"\} [1-9]/m);
      assert.doesNotMatch(outpost.log(), /http\.(tls_handshake_failed|probe_failed|server_error|accept_stalled)/);

      await confirmed(outpost.dataDir);
      const limit = await squeezeDescriptors(outpost.process.pid, HEADROOM);
      sockets = await flood(port, FLOOD);
      await exhausted(outpost.process.pid, limit);
      await eventually(() => refusedQuickly(port, 500), Boolean, 5_000);
      for (const socket of sockets) socket.destroy();
      const ms = await msUntilServed(`${https}/healthz`, RECOVERY_BOUND_MS, client);
      const events = listenerEvents(await (await fetch(`${https}/metrics`, { client })).text(), "api");
      console.log(`TLS: /healthz 200 ${ms.toFixed(0)} ms after release; listener events ${JSON.stringify(events)}`);
      assert.ok((events.reopened ?? 0) >= 1, JSON.stringify(events));
      assert.ok(await stillRunning(outpost.process));
    } finally {
      for (const socket of sockets) socket.destroy();
      client.close();
      assert.equal(await outpost.stop(), 0);
      await Deno.remove(dir, { recursive: true });
    }
  },
});
