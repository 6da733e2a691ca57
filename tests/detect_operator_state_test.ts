/**
 * What operator actions leave behind (issue 10, review item 5), against the real program over
 * loopback: a false-alarm verdict on an old event is recorded on that event and changes nothing
 * else (checked against a second Outpost fed the same readings without the verdict), and after an
 * accepted operating point the next readings do not re-open an episode at once.
 */
import assert from "node:assert/strict";
import { type OutpostProcess, startOutpost, writeManifest } from "./helpers/outpost_process.ts";
import { fetchReadings, replay, type ReplayedReading, scoredThrough } from "./helpers/replay.ts";
import { simulateFaultRecording, simulateNormalRecording } from "./sim/plant_simulator.ts";

const TOKEN = "operator-state-token";

interface Event {
  id: number;
  open: boolean;
  start: string;
  end: string | null;
  peakScore: number;
  sensors: string[];
  readings: number;
  endReason: string | null;
  verdict: { kind: string; at: string } | null;
}

async function post(url: string, path: string) {
  const response = await fetch(`${url}${path}`, { method: "POST", headers: { authorization: `Bearer ${TOKEN}` } });
  return { status: response.status, body: await response.json() };
}

async function events(url: string, device: string): Promise<Event[]> {
  return (await (await fetch(`${url}/v1/events?device=${encodeURIComponent(device)}`)).json()).events;
}

/** Sends `readings` and waits until the last of them is scored. */
async function send(outpost: OutpostProcess, device: string, readings: readonly ReplayedReading[]) {
  await replay(outpost.url, device, readings);
  await scoredThrough(outpost.url, device, readings.at(-1)!.ts);
}

/** A normal recording with vibration_x four times its level over [from, to): an episode each. */
function withDeviations(readings: readonly ReplayedReading[], spans: [number, number][]): ReplayedReading[] {
  return readings.map((reading, i) => {
    const inside = spans.some(([from, to]) => i >= from && i < to);
    return inside ? { ts: reading.ts, values: { ...reading.values, vibration_x: reading.values.vibration_x * 4 } } : {
      ts: reading.ts,
      values: reading.values,
    };
  });
}

Deno.test("a false-alarm verdict on an old event is recorded on it and changes neither the baseline nor the open episode", async () => {
  const dirs = [await Deno.makeTempDir(), await Deno.makeTempDir()];
  const started: OutpostProcess[] = [];
  try {
    const manifests = await Promise.all(dirs.map((dir) => writeManifest(dir, { logLevel: "warn" })));
    started.push(
      ...await Promise.all(manifests.map((m) => startOutpost(m, { env: { OUTPOST_ADMIN_TOKEN: TOKEN } }))),
    );
    const [control, subject] = started;
    const device = "pump-v";
    const { readings: normal } = simulateNormalRecording({ seed: 61, hours: 0.4 });
    const readings = withDeviations(normal, [[600, 660], [900, 960]]);
    const both = (from: number, to: number) =>
      Promise.all(started.map((outpost) => send(outpost, device, readings.slice(from, to))));

    await both(0, 930);
    const [second, first] = await events(subject.url, device);
    assert.deepEqual([first?.open, second?.open], [false, true], JSON.stringify([first, second]));

    // A verdict on the closed first event while the second is open.
    const onFirst = await post(subject.url, `/v1/events/${first.id}/false-alarm`);
    assert.equal(onFirst.status, 200, JSON.stringify(onFirst.body));
    assert.deepEqual(onFirst.body, {
      event: first.id,
      verdict: "false_alarm",
      device,
      endedEvent: null,
      baselineAccepted: false,
    });
    const open = (await events(subject.url, device)).find((e) => e.id === second.id)!;
    assert.deepEqual([open.open, open.endReason, open.verdict], [true, null, null], "the open episode goes on");

    await both(930, 1100);
    const closed = (await events(subject.url, device)).find((e) => e.id === second.id)!;
    assert.equal(closed.open, false, JSON.stringify(closed));
    assert.equal((await events(subject.url, device)).filter((e) => e.open).length, 0);

    // A verdict on the second event, now old, while nothing is open.
    const onSecond = await post(subject.url, `/v1/events/${second.id}/false-alarm`);
    assert.deepEqual(onSecond.body, {
      event: second.id,
      verdict: "false_alarm",
      device,
      endedEvent: null,
      baselineAccepted: false,
    });

    await both(1100, readings.length);
    const [withVerdicts, without] = await Promise.all([events(subject.url, device), events(control.url, device)]);
    assert.deepEqual(
      withVerdicts.map((e) => [e.id, e.verdict?.kind ?? null]).filter(([, kind]) => kind !== null),
      [[second.id, "false_alarm"], [first.id, "false_alarm"]],
    );
    assert.deepEqual(withVerdicts.map((e) => ({ ...e, verdict: null })), without, "the same episodes");
    const [subjectRows, controlRows] = await Promise.all(
      started.map((outpost) => fetchReadings(outpost.url, device, 10_000)),
    );
    const differ = subjectRows.flatMap((r, i) =>
      r.score === controlRows[i].score && r.anomaly === controlRows[i].anomaly
        ? []
        : [`#${i}: ${r.score}/${r.anomaly} vs ${controlRows[i].score}/${controlRows[i].anomaly}`]
    );
    assert.deepEqual(differ.slice(0, 5), [], `${differ.length} readings scored differently after the verdicts`);
  } finally {
    for (const outpost of started) await outpost.stop();
    for (const dir of dirs) await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("after an accepted operating point the next readings do not re-open an episode at once, across a restart too", async () => {
  const dir = await Deno.makeTempDir();
  const manifest = await writeManifest(dir, { logLevel: "warn" });
  let outpost = await startOutpost(manifest, { env: { OUTPOST_ADMIN_TOKEN: TOKEN } });
  try {
    for (const [device, seed, restart] of [["pump-s", 3, false], ["pump-t", 4, true]] as const) {
      // A new setpoint: a step that lasts. The operator accepts it as soon as the episode opens.
      const { readings, faultStart, faultEnd } = simulateFaultRecording({ seed, fault: "step" });
      assert.ok(faultEnd - faultStart >= 90, `${faultStart}-${faultEnd}`);
      await send(outpost, device, readings.slice(0, faultStart));
      let sent = faultStart;
      while ((await events(outpost.url, device)).length === 0) {
        assert.ok(sent < faultStart + 30, `${device}: no episode within 30 readings of the step`);
        await send(outpost, device, readings.slice(sent, sent + 1));
        sent++;
      }
      const [open] = await events(outpost.url, device);
      assert.equal(open.open, true);
      const accepted = await post(outpost.url, `/v1/devices/${device}/accept`);
      assert.deepEqual(accepted.body, { device, endedEvent: open.id, baselineAccepted: true });
      if (restart) {
        assert.equal(await outpost.stop(), 0);
        outpost = await startOutpost(manifest, { env: { OUTPOST_ADMIN_TOKEN: TOKEN } });
      }
      const until = faultEnd - 5;
      await send(outpost, device, readings.slice(sent, until));
      const after = (await fetchReadings(outpost.url, device, 10_000)).slice(sent, until);
      const flagged = after.filter((r) => r.anomaly).length;
      assert.deepEqual(
        (await events(outpost.url, device)).map((e) => [e.id, e.endReason]),
        [[open.id, "accepted"]],
        `${device}: ${flagged} of ${after.length} readings after the accept flagged, first at #${
          after.findIndex((r) => r.anomaly)
        }`,
      );
    }
  } finally {
    await outpost.stop();
    await Deno.remove(dir, { recursive: true });
  }
});
