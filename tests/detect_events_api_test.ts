import assert from "node:assert/strict";
import { createClient } from "@libsql/client";
import { join } from "node:path";
import { detectionObserver } from "../src/detect/detect_metrics.ts";
import { Metrics } from "../src/observability/metrics.ts";
import { eventsPageStatement } from "../src/store/events_table.ts";
import { eventually } from "./helpers/eventually.ts";
import { startOutpost, writeManifest } from "./helpers/outpost_process.ts";
import { replay } from "./helpers/replay.ts";
import { simulateRecording } from "./sim/pump_simulator.ts";

const START = Date.parse("2026-11-20T00:00:00Z");
const EVENTS = 250;
const DEVICES = ["pump-0", "pump-1", "pump-2"];

async function get(url: string) {
  const response = await fetch(url);
  const text = await response.text();
  return { status: response.status, type: response.headers.get("content-type") ?? "", body: JSON.parse(text) };
}

/** Every event id of `query`, newest first, following nextCursor with pages of `limit`. */
async function pageIds(url: string, query: string, limit: number): Promise<number[]> {
  const ids: number[] = [];
  let cursor: string | null = null;
  do {
    const page = await get(`${url}/v1/events?${query}&limit=${limit}${cursor ? `&cursor=${cursor}` : ""}`);
    assert.equal(page.status, 200, JSON.stringify(page.body));
    assert.ok(page.body.events.length <= limit);
    ids.push(...page.body.events.map((event: { id: number }) => event.id));
    cursor = page.body.nextCursor;
  } while (cursor);
  return ids;
}

/**
 * Events 1..250 of three devices, a minute apart: the newest of each device is open, 10 ended
 * as false alarms with a verdict, and event 1 ended before end reasons were recorded.
 */
async function seedEvents(dataDir: string): Promise<void> {
  const client = createClient({ url: `file:${join(dataDir, "outpost.db")}` });
  try {
    const statements = [];
    for (let id = 1; id <= EVENTS; id++) {
      const open = id > EVENTS - DEVICES.length;
      const falseAlarm = id % 25 === 0 && !open;
      statements.push({
        sql: `INSERT INTO events (id, device, start_ts, end_ts, peak_score, model, top_sensors, readings, end_reason,
                verdict, verdict_ts) VALUES (?, ?, ?, ?, ?, 'pca-t2q/x@cal-1', '["temperature","current"]', 4, ?, ?, ?)`,
        args: [
          id,
          DEVICES[id % DEVICES.length],
          START + id * 60_000,
          open ? null : START + id * 60_000 + 30_000,
          1 + id / 100,
          open || id === 1 ? null : falseAlarm ? "false_alarm" : "cleared",
          falseAlarm ? "false_alarm" : null,
          falseAlarm ? START + id * 60_000 + 30_000 : null,
        ],
      });
    }
    await client.batch(statements, "write");
  } finally {
    client.close();
  }
}

const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => to - i);

Deno.test("GET /v1/events pages newest first without gaps, filters by device, state and start; bad parameters are JSON 400", async () => {
  const dir = await Deno.makeTempDir();
  const manifest = await writeManifest(dir, { logLevel: "warn" });
  let outpost = await startOutpost(manifest);
  try {
    await outpost.stop();
    await seedEvents(outpost.dataDir);
    outpost = await startOutpost(manifest);

    const first = await get(`${outpost.url}/v1/events`);
    assert.equal(first.body.events.length, 100, "100 by default");
    assert.deepEqual(first.body.events.map((e: { id: number }) => e.id), range(151, 250));
    const open = first.body.events[0];
    assert.deepEqual(open, {
      id: 250,
      device: "pump-1",
      start: new Date(START + 250 * 60_000).toISOString(),
      end: null,
      open: true,
      peakScore: 3.5,
      model: "pca-t2q/x@cal-1",
      sensors: ["temperature", "current"],
      readings: 4,
      endReason: null,
      verdict: null,
    });
    const falseAlarm = first.body.events.find((e: { id: number }) => e.id === 225);
    assert.deepEqual([falseAlarm.open, falseAlarm.endReason, falseAlarm.verdict], [false, "false_alarm", {
      kind: "false_alarm",
      at: new Date(START + 225 * 60_000 + 30_000).toISOString(),
    }]);

    assert.deepEqual(await pageIds(outpost.url, "", 7), range(1, EVENTS), "every event once, newest first");
    const all = await get(`${outpost.url}/v1/events?limit=1000`);
    assert.deepEqual([all.body.events.length, all.body.nextCursor], [EVENTS, null]);
    assert.equal(all.body.events.at(-1).endReason, "cleared", "an event ended before end reasons counts as cleared");

    const ofPump1 = range(1, EVENTS).filter((id) => id % 3 === 1);
    assert.deepEqual(await pageIds(outpost.url, "device=pump-1", 10), ofPump1);
    assert.deepEqual(await pageIds(outpost.url, "state=open", 2), [250, 249, 248]);
    assert.deepEqual(await pageIds(outpost.url, "state=closed", 100), range(1, 247));
    assert.deepEqual(await pageIds(outpost.url, "device=pump-1&state=open", 5), [250]);
    assert.deepEqual(await pageIds(outpost.url, "device=pump-1&state=closed", 9), ofPump1.slice(1));
    assert.deepEqual(await pageIds(outpost.url, "device=nobody", 5), []);
    const from = new Date(START + 100 * 60_000).toISOString();
    const to = new Date(START + 110 * 60_000).toISOString();
    assert.deepEqual(await pageIds(outpost.url, `from=${from}&to=${to}`, 3), range(100, 109));
    assert.deepEqual(await pageIds(outpost.url, `device=pump-2&from=${START + 240 * 60_000}`, 3), [248, 245, 242]);

    for (
      const [query, parameter] of [
        ["state=opened", "state"],
        ["state=", "state"],
        ["state=OPEN", "state"],
        ["limit=0", "limit"],
        ["limit=1001", "limit"],
        ["limit=abc", "limit"],
        ["cursor=", "cursor"],
        ["cursor=!!!", "cursor"],
        ["cursor=%%", "cursor"],
        ["cursor=MA", "cursor"], // "0"
        ["cursor=LTE", "cursor"], // "-1"
        ["cursor=MS41", "cursor"], // "1.5"
        ["cursor=_w", "cursor"],
        [`cursor=${"9".repeat(400)}`, "cursor"],
        ["cursor=OTk5OTk5OTk5OTk5OTk5OTk5", "cursor"], // beyond a safe integer
        ["from=yesterday", "from"],
        ["to=2026-02-30T00:00:00Z", "to"],
      ]
    ) {
      const refused = await get(`${outpost.url}/v1/events?${query}`);
      assert.equal(refused.status, 400, query);
      assert.match(refused.type, /application\/json/, query);
      assert.equal(refused.body.error, "bad_request", query);
      assert.match(refused.body.message, new RegExp(`^${parameter} `), query);
    }
  } finally {
    await outpost.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("every GET /v1/events query walks one index backwards, never sorts", async () => {
  const dir = await Deno.makeTempDir();
  const outpost = await startOutpost(await writeManifest(dir, { logLevel: "warn" }));
  await outpost.stop();
  await seedEvents(outpost.dataDir);
  const client = createClient({ url: `file:${join(outpost.dataDir, "outpost.db")}` });
  try {
    await client.execute("ANALYZE");
    for (const device of [null, "pump-1"]) {
      for (const state of [null, "open", "closed"] as const) {
        for (const [fromTs, toTs] of [[0, Number.MAX_SAFE_INTEGER], [START, START + 3_600_000]]) {
          const query = { device, state, fromTs, toTs, beforeId: 200, limit: 10 };
          const statement = eventsPageStatement(query) as { sql: string; args: (string | number)[] };
          const plan = await client.execute({ sql: `EXPLAIN QUERY PLAN ${statement.sql}`, args: statement.args });
          const details = plan.rows.map((row) => String(row.detail));
          const label = JSON.stringify({ device, state, fromTs }) + ": " + details.join(" | ");
          assert.equal(details.length, 1, label);
          assert.match(
            details[0],
            /^SEARCH events USING (INTEGER PRIMARY KEY \(rowid<\?\)|INDEX events_end \(end_ts=\? AND rowid<\?\)|INDEX events_device_id \(device=\? AND id<\?\))$/,
            label,
          );
        }
      }
    }
  } finally {
    client.close();
    await Deno.remove(dir, { recursive: true });
  }
});

function sample(metrics: string, name: string, device: string): number | undefined {
  const line = metrics.split("\n").find((l) => l.startsWith(`${name}{device="${device}"} `));
  return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(" ") + 1));
}

Deno.test("after a fault is scored, /metrics has the device's series and /v1/devices its last reading, latest score and open event", async () => {
  const dir = await Deno.makeTempDir();
  const outpost = await startOutpost(
    await writeManifest(dir, { detection: ["calibration: { readings: 100 }"], logLevel: "warn" }),
  );
  try {
    const device = "pump 7";
    const recording = simulateRecording({ seed: 11, fault: "step", calibration: 100, seconds: 500 });
    const readings = recording.readings;
    const devicesPage = () => get(`${outpost.url}/v1/devices`);

    await replay(outpost.url, device, readings.slice(0, 50));
    const calibrating = await eventually(devicesPage, (p) => p.body.devices[0]?.calibration?.collected === 50);
    assert.deepEqual(
      [
        calibrating.body.devices[0].lastSeen,
        calibrating.body.devices[0].latestScore,
        calibrating.body.devices[0].openEvent,
      ],
      [new Date(readings[49].ts).toISOString(), null, null],
    );

    // Into the fault, not out of it: the episode is still open.
    const inFault = readings.slice(50, recording.faultStart + 40);
    assert.ok(recording.faultStart + 40 < recording.faultEnd);
    await replay(outpost.url, device, inFault);
    const lastTs = inFault.at(-1)!.ts;
    const page = await eventually(
      devicesPage,
      (p) => p.body.devices[0]?.latestScore?.ts === new Date(lastTs).toISOString() && p.body.devices[0].openEvent,
      30_000,
    );
    const row = page.body.devices[0];
    assert.equal(row.lastSeen, new Date(lastTs).toISOString());
    assert.equal(typeof row.latestScore.score, "number");
    assert.equal(row.latestScore.anomaly, row.anomaly);

    const { body: events } = await get(`${outpost.url}/v1/events?device=pump%207&state=open`);
    assert.equal(events.events.length, 1, JSON.stringify(events));
    const [event] = events.events;
    assert.deepEqual(row.openEvent, {
      id: event.id,
      start: event.start,
      peakScore: event.peakScore,
      sensors: event.sensors,
    });
    assert.deepEqual([event.open, event.endReason, event.verdict], [true, null, null]);

    const metrics = await (await fetch(`${outpost.url}/metrics`)).text();
    assert.equal(sample(metrics, "outpost_device_anomaly", device), row.anomaly ? 1 : 0, metrics);
    assert.equal(sample(metrics, "outpost_device_score", device), row.latestScore.score);
    assert.equal(sample(metrics, "outpost_device_last_reading_timestamp_seconds", device), lastTs / 1000);

    // The rest of the recording: the fault ends, and so does the episode.
    await replay(outpost.url, device, readings.slice(recording.faultStart + 40));
    const closed = await eventually(
      () => get(`${outpost.url}/v1/events?device=pump%207`),
      (p) => p.body.events.some((e: { id: number; open: boolean }) => e.id === event.id && !e.open),
      30_000,
    );
    const ended = closed.body.events.find((e: { id: number }) => e.id === event.id);
    assert.ok(["cleared", "rebaselined"].includes(ended.endReason), JSON.stringify(ended));
    assert.ok(Date.parse(ended.end) >= Date.parse(ended.start));
  } finally {
    await outpost.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("per-device series exist for at most spec.limits.devices devices; one beyond is counted as a refusal", async () => {
  const metrics = new Metrics(() => ({
    rows: 0,
    usedBytes: 0,
    maxSizeBytes: 0,
    deadLetters: 0,
    devices: 0,
    commitFailures: 0,
    checkpointFailures: 0,
    retentionDeleted: {},
    schemaVersion: 0,
  }));
  const observer = detectionObserver(metrics, () => 0, { maxDevices: 2 });
  const ts = Date.parse("2026-11-20T10:00:00Z");
  observer.deviceScored!("a", 0.4, false, ts);
  observer.deviceScored!('b "quoted"\\', 2.5, true, ts + 1000);
  observer.deviceScored!("c", 0.1, false, ts + 2000);
  let text = await metrics.render();
  assert.equal(sample(text, "outpost_device_anomaly", "a"), 0);
  assert.equal(sample(text, "outpost_device_score", "a"), 0.4);
  assert.equal(sample(text, "outpost_device_anomaly", 'b \\"quoted\\"\\\\'), 1, text);
  assert.equal(sample(text, "outpost_device_last_reading_timestamp_seconds", 'b \\"quoted\\"\\\\'), ts / 1000 + 1);
  assert.equal(sample(text, "outpost_device_score", "c"), undefined, "no series beyond the bound");
  assert.match(text, /^outpost_limit_refusals_total\{limit="spec\.limits\.devices"\} 1$/m);

  observer.deviceScored!("a", 3, true, ts + 3000);
  observer.deviceForgotten!('b "quoted"\\');
  observer.deviceScored!("c", 0.1, false, ts + 4000);
  text = await metrics.render();
  assert.deepEqual(
    ["a", 'b \\"quoted\\"\\\\', "c"].map((device) => sample(text, "outpost_device_score", device)),
    [3, undefined, 0.1],
    "a forgotten device frees its place",
  );
  assert.equal(sample(text, "outpost_device_anomaly", "a"), 1);
  assert.match(text, /^outpost_limit_refusals_total\{limit="spec\.limits\.devices"\} 1$/m);
});
