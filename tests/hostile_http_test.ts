import assert from "node:assert/strict";
import { query } from "./helpers/db.ts";
import { hostileBodies, hostileQueries, parseAnswer, peakRssBytes, rawExchange } from "./helpers/hostile.ts";
import { postJson, startOutpost, writeManifest } from "./helpers/outpost_process.ts";

const BUDGET_BYTES = 128 * 1024 * 1024;
const portOf = (url: string) => Number(new URL(url).port);

Deno.test("10,000 hostile HTTP bodies and queries: every answer a JSON 4xx, nothing stored, the process up within its memory budget", async () => {
  const dir = await Deno.makeTempDir();
  const outpost = await startOutpost(await writeManifest(dir, { logLevel: "error" }));
  try {
    const bodies = hostileBodies(10_000);
    const statuses = new Map<number, number>();
    let next = 0;
    const worker = async () => {
      while (next < bodies.length) {
        const body = bodies[next++];
        const response = await postJson(`${outpost.url}/v1/readings`, body);
        const text = await response.text();
        statuses.set(response.status, (statuses.get(response.status) ?? 0) + 1);
        assert.ok(response.status >= 400 && response.status < 500, `${response.status} for ${body.slice(0, 120)}`);
        assert.equal(typeof JSON.parse(text).error, "string", text.slice(0, 200));
      }
    };
    await Promise.all(Array.from({ length: 8 }, worker));
    for (const path of hostileQueries()) {
      const response = await fetch(`${outpost.url}${path}`);
      const answer = await response.json();
      assert.equal(response.status, 400, `${path}: ${JSON.stringify(answer)}`);
      assert.equal(typeof answer.error, "string");
    }
    assert.deepEqual(await query(outpost.dataDir, "SELECT count(*) AS n FROM readings"), [{ n: 0 }]);
    assert.equal((await fetch(`${outpost.url}/healthz`)).status, 200);
    const peak = await peakRssBytes(outpost.process.pid);
    assert.ok(peak < BUDGET_BYTES, `peak RSS ${peak} bytes`);
    console.log(`statuses ${JSON.stringify([...statuses])}, peak RSS ${(peak / 2 ** 20).toFixed(1)} MiB`);
  } finally {
    assert.equal(await outpost.stop(), 0);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("malformed HTTP (request line, headers, chunk framing, oversized headers) is answered with JSON", async () => {
  const dir = await Deno.makeTempDir();
  const outpost = await startOutpost(await writeManifest(dir, { logLevel: "error" }));
  const port = portOf(outpost.url);
  try {
    const cases: [string, number][] = [
      ["GARBAGE\r\n\r\n", 400],
      ["GET / HTTP/9.9\r\n\r\n", 400],
      ["GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n", 400],
      [`GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ${"a".repeat(20_000)}\r\n\r\n`, 431],
      [
        "POST /v1/readings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n" +
        "zz\r\n{}\r\n0\r\n\r\n",
        400,
      ],
      [
        "POST /v1/readings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 5\r\n" +
        "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
      ],
    ];
    for (const [request, status] of cases) {
      const answer = parseAnswer(await rawExchange(port, request));
      assert.equal(answer.status, status, request.slice(0, 60));
      assert.equal(typeof answer.body?.error, "string", request.slice(0, 60));
    }
    assert.equal((await fetch(`${outpost.url}/healthz`)).status, 200);
  } finally {
    assert.equal(await outpost.stop(), 0);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("500 slow-body sockets are cut off with a JSON 408, idle keep-alive sockets are closed, memory stays bounded", async () => {
  const dir = await Deno.makeTempDir();
  const outpost = await startOutpost(
    await writeManifest(dir, {
      logLevel: "error",
      limits: ["connections: 600", "headersTimeoutMs: 1000", "requestTimeoutMs: 2000", "keepAliveTimeoutMs: 500"],
    }),
  );
  const port = portOf(outpost.url);
  try {
    const started = performance.now();
    const slow = Array.from({ length: 500 }, () =>
      rawExchange(
        port,
        "POST /v1/readings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 200000\r\n\r\n{",
        8_000,
      ));
    const slowHeaders = rawExchange(port, "GET /healthz HTTP/1.1\r\nHost: x\r\n", 8_000);
    const answers = (await Promise.all([...slow, slowHeaders])).map(parseAnswer);
    assert.ok(performance.now() - started < 7_000);
    // Bodies being read run into the request timeout; the rest were never admitted
    // (spec.limits.ingestConcurrency and ingestQueue) and got 503 at once.
    const limits = answers.map((answer) => `${answer.status} ${answer.body?.limit}`);
    assert.deepEqual(
      new Set(limits),
      new Set(["408 spec.limits.requestTimeoutMs", "503 spec.limits.ingestQueue"]),
    );

    const idle = await Deno.connect({ hostname: "127.0.0.1", port });
    await idle.write(new TextEncoder().encode("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"));
    const buffer = new Uint8Array(4096);
    assert.ok((await idle.read(buffer))! > 0);
    const closedAt = performance.now();
    assert.equal(await idle.read(buffer), null, "the server closes an idle keep-alive socket");
    assert.ok(performance.now() - closedAt < 2_000);
    idle.close();

    const accepted = await postJson(`${outpost.url}/v1/readings`, {
      device: "d",
      ts: 1_763_805_600_000,
      values: { a: 1 },
    });
    assert.equal(accepted.status, 202);
    await accepted.body?.cancel();
    const peak = await peakRssBytes(outpost.process.pid);
    assert.ok(peak < BUDGET_BYTES, `peak RSS ${peak} bytes`);
  } finally {
    assert.equal(await outpost.stop(), 0);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("connections past spec.limits.connections get a JSON 503 and the API keeps answering", async () => {
  const dir = await Deno.makeTempDir();
  const outpost = await startOutpost(await writeManifest(dir, { logLevel: "error", limits: ["connections: 20"] }));
  const port = portOf(outpost.url);
  const held: Deno.Conn[] = [];
  try {
    for (let i = 0; i < 20; i++) held.push(await Deno.connect({ hostname: "127.0.0.1", port }));
    await new Promise((resolve) => setTimeout(resolve, 200));
    const refused = parseAnswer(await rawExchange(port, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"));
    assert.equal(refused.status, 503);
    assert.equal(refused.body?.limit, "spec.limits.connections");
    for (const conn of held.splice(0)) conn.close();
    await new Promise((resolve) => setTimeout(resolve, 200));
    assert.equal((await fetch(`${outpost.url}/healthz`)).status, 200);
    const metrics = await (await fetch(`${outpost.url}/metrics`)).text();
    assert.match(metrics, /outpost_limit_refusals_total\{limit="spec.limits.connections"\} [1-9]/);
  } finally {
    for (const conn of held) conn.close();
    assert.equal(await outpost.stop(), 0);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the HTTP crash-loop reproductions are refused up front, name their limit, and survive a restart", async () => {
  const dir = await Deno.makeTempDir();
  const manifest = await writeManifest(dir, { logLevel: "error", limits: ["devices: 50"] });
  let outpost = await startOutpost(manifest);
  try {
    const large = await postJson(`${outpost.url}/v1/readings`, `{"readings":[${Array(200_000).fill(1).join(",")}]}`);
    assert.deepEqual([large.status, (await large.json()).limit], [413, "spec.api.bodyLimitBytes"]);
    const elements = await postJson(`${outpost.url}/v1/readings`, `{"readings":[${Array(10_001).fill(1).join(",")}]}`);
    assert.deepEqual([elements.status, (await elements.json()).limit], [413, "spec.limits.readingsPerRequest"]);
    const wide = Object.fromEntries(Array.from({ length: 1_000 }, (_, i) => [`s${i}`, i]));
    const sensors = await postJson(`${outpost.url}/v1/readings`, { device: "d", ts: 1_763_805_600_000, values: wide });
    assert.deepEqual([sensors.status, (await sensors.json()).limit], [413, "spec.limits.sensorsPerReading"]);
    const devices = (from: number) =>
      Array.from({ length: 40 }, (_, i) => ({ device: `dev-${from + i}`, ts: 1_763_805_600_000, values: { a: 1 } }));
    const first = await postJson(`${outpost.url}/v1/readings`, { readings: devices(0) });
    assert.equal(first.status, 202);
    await first.body?.cancel();
    const second = await postJson(`${outpost.url}/v1/readings`, { readings: devices(40) });
    const refused = await second.json();
    assert.deepEqual([second.status, refused.limit, refused.max], [422, "spec.limits.devices", 50]);
    assert.equal((await fetch(`${outpost.url}/v1/devices`)).status, 200);
    assert.equal(await outpost.stop(), 0);

    outpost = await startOutpost(manifest);
    const again = await postJson(`${outpost.url}/v1/readings`, { readings: devices(0).slice(0, 5) });
    assert.deepEqual([again.status, (await again.json()).duplicates], [202, 5]);
    const stillRefused = await postJson(`${outpost.url}/v1/readings`, { readings: devices(40) });
    assert.equal(stillRefused.status, 422);
    await stillRefused.body?.cancel();
  } finally {
    assert.equal(await outpost.stop(), 0);
    await Deno.remove(dir, { recursive: true });
  }
});
