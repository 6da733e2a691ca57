/**
 * Admission (src/api/admission.ts), the bound on reads whose cost the client sets
 * (`spec.limits.heavyReads`: charts, sorted device listings, reading pages): what runs, what waits
 * and what is refused with a 503 naming the manifest key.
 */
import assert from "node:assert/strict";
import { Admission } from "../src/api/admission.ts";
import { LimitExceededError } from "../src/limit_exceeded_error.ts";

const NAMES = { what: "heavy reads", queueLimit: "heavyReads", waitLimit: "heavyReads" };

function gate() {
  let open!: () => void;
  const opened = new Promise<void>((resolve) => open = resolve);
  return { open, opened };
}

Deno.test("heavy reads: two run, the queue waits in order, one more is refused at once with a 503 naming spec.limits.heavyReads", async () => {
  const admission = new Admission({ concurrency: 2, queue: 3, queueWaitMs: 10_000 }, NAMES);
  const started: number[] = [];
  const gates = Array.from({ length: 5 }, gate);
  const runs = gates.map((g, i) =>
    admission.run(async () => {
      started.push(i);
      await g.opened;
      return i;
    })
  );
  await new Promise((resolve) => setTimeout(resolve, 10));
  assert.deepEqual(started, [0, 1], "two run at once, three wait");
  const refused = await admission.run(() => Promise.resolve(-1)).catch((error) => error);
  assert.ok(refused instanceof LimitExceededError);
  assert.equal(refused.status, 503);
  assert.equal(refused.key, "spec.limits.heavyReads");
  assert.equal(refused.limit, 3);
  gates[1].open();
  assert.equal(await runs[1], 1);
  await new Promise((resolve) => setTimeout(resolve, 10));
  assert.deepEqual(started, [0, 1, 2], "a freed slot passes to the oldest waiter");
  for (const g of gates) g.open();
  assert.deepEqual(await Promise.all(runs), [0, 1, 2, 3, 4]);
  assert.equal(await admission.run(() => Promise.resolve(5)), 5, "every slot is free again");
});

Deno.test("heavy reads: a waiter is refused after queueWaitMs, leaves the queue, and a failed read frees its slot", async () => {
  const admission = new Admission({ concurrency: 1, queue: 1, queueWaitMs: 50 }, NAMES);
  const g = gate();
  const running = admission.run(() => g.opened);
  const waited = performance.now();
  const refused = await admission.run(() => Promise.resolve("never")).catch((error) => error);
  assert.ok(refused instanceof LimitExceededError && refused.status === 503, String(refused));
  assert.ok(performance.now() - waited >= 45, "refused only after the wait");
  // The queue has room again: a new waiter is not refused at once.
  const next = admission.run(() => Promise.reject(new Error("read failed")));
  g.open();
  await running;
  await assert.rejects(next, /read failed/);
  assert.equal(await admission.run(() => Promise.resolve("free")), "free");
});
