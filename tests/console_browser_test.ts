/**
 * The console in a real browser (Debian's chromium over the DevTools protocol) against the real
 * program: every page loads with no console error, no uncaught exception and no failed request
 * (a CSP violation is a console error), shows what was just ingested, the device chart shades
 * the injected fault's episode and the device's model history, the audit page says whether the
 * egress audit chain verifies (and turns bad once its head file is removed while Outpost runs),
 * and an admin action is refused without the token and works with it (and shows in the model's
 * history); the devices page sorts across pages by the server. Screenshots of each page go to $OUTPOST_SCREENSHOTS (CI keeps them) or a temp folder.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { Browser, type BrowserPage, chromiumAvailable } from "./helpers/browser.ts";
import { eventually } from "./helpers/eventually.ts";
import { postJson, startOutpost, writeManifest } from "./helpers/outpost_process.ts";
import { replay } from "./helpers/replay.ts";
import { simulateRecording } from "./sim/pump_simulator.ts";

const TOKEN = "console-admin-token";

async function show(page: BrowserPage, hash: string, ready: string, what: string) {
  await page.evaluate(`location.hash = ${JSON.stringify(hash)}`);
  await page.waitFor(
    `document.querySelector("main").getAttribute("aria-busy") === "false" && (${ready})`,
    what,
    15_000,
  );
}

Deno.test({
  name:
    "the console shows the plant in a real browser: no errors, the fault's episode band, admin actions gated by the token",
  ignore: !chromiumAvailable(),
  async fn() {
    const dir = await Deno.makeTempDir();
    const shots = Deno.env.get("OUTPOST_SCREENSHOTS") ?? await Deno.makeTempDir({ prefix: "outpost-screenshots-" });
    await Deno.mkdir(shots, { recursive: true });
    const outpost = await startOutpost(
      await writeManifest(dir, { detection: ["calibration: { readings: 100 }"], logLevel: "warn" }),
      { env: { OUTPOST_ADMIN_TOKEN: TOKEN } },
    );
    const browser = await Browser.launch();
    try {
      const device = "pump 7";
      const recording = simulateRecording({ seed: 11, fault: "step", calibration: 100, seconds: 500 });
      const inFault = recording.readings.slice(0, recording.faultStart + 40);
      await replay(outpost.url, device, inFault);
      await eventually(
        async () => (await (await fetch(`${outpost.url}/v1/devices`)).json()).devices[0],
        (row) => row?.openEvent !== null && row?.latestScore?.ts === new Date(inFault.at(-1)!.ts).toISOString(),
        30_000,
      );
      // 60 more devices (after "pump 7" by name), so the devices page has two pages of 50.
      const others = Array.from({ length: 60 }, (_, i) => `zz-${String(i).padStart(2, "0")}`);
      const extra = await postJson(`${outpost.url}/v1/readings`, {
        readings: others.map((name) => ({ device: name, ts: inFault[0].ts, values: { a: 1 } })),
      });
      assert.equal(extra.status, 202);
      await extra.body?.cancel();
      await eventually(
        async () => (await (await fetch(`${outpost.url}/v1/devices?limit=100`)).json()).devices.length,
        (count) => count === 61,
      );

      const page = await browser.page();
      await page.navigate(`${outpost.url}/`);
      await show(page, "#/", `document.querySelector("[data-view=overview] [data-table=checks] tbody tr")`, "overview");
      assert.match(await page.evaluate<string>(`document.querySelector("[data-view=overview]").innerText`), /ready/);
      // The start's audit verify has run by now (2 s after start; the device took longer to score).
      await page.waitFor(`document.querySelector("[data-view=overview] [data-audit-verify=ok]")`, "audit chain intact");
      assert.match(
        await page.evaluate<string>(`document.querySelector("[data-view=overview] [data-audit-verify]").innerText`),
        /audit chain\s+intact \(0 rows/,
      );
      await page.screenshot(join(shots, "console-overview.png"));

      await show(
        page,
        "#/devices",
        `document.querySelector('[data-device="pump 7"] td.spark canvas')`,
        "the devices page with a sparkline",
      );
      assert.match(
        await page.evaluate<string>(`document.querySelector('[data-device="pump 7"]').innerText`),
        /pump 7\s+active/,
      );
      await page.screenshot(join(shots, "console-devices.png"));
      // The device header sorts by name the other way, across both pages (the server sorts).
      const firstRow = `document.querySelector("[data-table=devices] tbody tr")?.dataset.device`;
      await page.evaluate(`document.querySelector("a[data-sort=device]").click()`);
      await page.waitFor(`${firstRow} === "zz-59"`, "devices by name, descending");
      await page.evaluate(`[...document.querySelectorAll("a")].find((a) => a.textContent === "Next page →").click()`);
      await page.waitFor(`${firstRow} === "zz-09"`, "the second page of devices by name, descending");
      assert.deepEqual(
        await page.evaluate<string[]>(
          `[...document.querySelectorAll("[data-table=devices] tbody tr")].map((tr) => tr.dataset.device)`,
        ),
        [...others.slice(0, 10).reverse(), "pump 7"],
      );

      const sensors = Object.keys(inFault[0].values).length;
      const from = inFault[0].ts;
      const to = inFault.at(-1)!.ts + 60_000;
      await show(
        page,
        `#/device/${encodeURIComponent(device)}?from=${from}&to=${to}`,
        `document.querySelectorAll("[data-sensor] canvas").length === ${sensors}`,
        "a chart per sensor",
      );
      const bands = await page.evaluate<string[]>(
        `[...document.querySelectorAll("[data-sensor]")].map((chart) => chart.dataset.episodeBands)`,
      );
      assert.deepEqual(bands, Array(sensors).fill("1"), "the open episode is shaded on every chart");
      assert.match(await page.evaluate<string>(`document.querySelector("[data-table=episodes]").innerText`), /open/);
      const models = await page.evaluate<string[][]>(
        `[...document.querySelectorAll("[data-table=models] tbody tr")].map((tr) => [...tr.cells].map((td) => td.innerText))`,
      );
      assert.equal(models.length, 1, JSON.stringify(models));
      assert.deepEqual([models[0][2], models[0][3], models[0][5]], ["baseline/pump 7", "calibrated", "current"]);
      const changes =
        `[...document.querySelectorAll("[data-table=model-history] tbody tr")].map((tr) => tr.cells[1].innerText)`;
      assert.deepEqual(await page.evaluate<string[]>(changes), ["calibrated"]);
      assert.match(
        await page.evaluate<string>(`document.querySelector("[data-view=device]").innerText`),
        /Scored by its own model[\s\S]*No previous model to roll back to/,
      );
      await page.screenshot(join(shots, "console-device.png"));

      await show(page, "#/events", `document.querySelector("[data-table=events] tbody tr")`, "the events page");
      assert.match(await page.evaluate<string>(`document.querySelector("[data-table=events]").innerText`), /pump 7/);
      await page.screenshot(join(shots, "console-events.png"));

      await show(
        page,
        "#/audit",
        `document.querySelector("[data-view=audit] [data-audit-verify=ok]")`,
        "the audit page",
      );
      assert.match(
        await page.evaluate<string>(`document.querySelector("[data-audit-verify]").innerText`),
        /chain\s+intact[\s\S]*rows checked\s+0[\s\S]*checked on\s+start/,
      );
      await page.screenshot(join(shots, "console-audit.png"));

      assert.deepEqual(structuredClone(page.problems), { consoleErrors: [], exceptions: [], failedRequests: [] });

      // An admin action: refused without the token, done with it.
      await show(
        page,
        `#/device/${encodeURIComponent(device)}`,
        `document.querySelector("[data-action=Recalibrate]")`,
        "device",
      );
      const outcome = `document.querySelector(".outcome").textContent`;
      await page.evaluate(`document.querySelector("[data-action=Recalibrate]").click()`);
      await page.waitFor(`${outcome}.includes("refused")`, "a refusal without the token");
      assert.ok(
        page.problems.failedRequests.every((request) => request.includes("401")),
        page.problems.failedRequests.join(),
      );
      await page.evaluate(`(() => {
        const input = document.querySelector("#admin-token");
        input.value = ${JSON.stringify(TOKEN)};
        input.dispatchEvent(new Event("change"));
      })()`);
      await page.evaluate(`document.querySelector("[data-action=Recalibrate]").click()`);
      await page.waitFor(`${outcome} === "Recalibrate: done"`, "the recalibration with the token");
      const row = (await (await fetch(`${outpost.url}/v1/devices`)).json()).devices[0];
      assert.equal(row.state, "calibrating");
      await page.evaluate(`dispatchEvent(new HashChangeEvent("hashchange"))`);
      await page.waitFor(`${changes}.join() === "recalibration,calibrated"`, "the recalibration in the model history");

      // The audit log loses its signed head while Outpost runs: "Verify now" (with the token) finds it.
      await Deno.remove(join(dir, "data", "audit-head.json"));
      await show(page, "#/audit", `document.querySelector("[data-action='Verify now']")`, "the audit page");
      await page.evaluate(`document.querySelector("[data-action='Verify now']").click()`);
      await page.waitFor(
        `document.querySelector("[data-view=audit] [data-audit-verify=failed]") && document.querySelector("[data-audit-problem]")`,
        "the audit chain reported not intact",
        15_000,
      );
      assert.match(
        await page.evaluate<string>(`document.querySelector("[data-view=audit]").innerText`),
        /NOT INTACT: head_missing[\s\S]*checked on\s+operator[\s\S]*audit head file is missing/,
      );
      await page.screenshot(join(shots, "console-audit-tampered.png"));
      const metrics = await (await fetch(`${outpost.url}/metrics`)).text();
      assert.match(metrics, /^outpost_audit_tamper_detected 1$/m);
      assert.deepEqual(page.problems.exceptions, []);
      assert.deepEqual(page.problems.consoleErrors.filter((error) => !error.includes("401")), []);
      page.close();
    } finally {
      await browser.close();
      await outpost.stop();
      await Deno.remove(dir, { recursive: true });
    }
    console.log(`screenshots in ${shots}`);
  },
});
