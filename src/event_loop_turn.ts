/**
 * How Outpost's chained work gives the event loop back: a 0 ms timer, never `setImmediate`.
 *
 * Under Deno 2.9.5, a chain of immediates that each do a few milliseconds of work (MQTT slices,
 * group commits), next to timer callbacks that do more (a scoring pass between its turns), keeps
 * the event loop from polling I/O and signals for seconds. During an MQTT flood with detection on
 * (`tests/mqtt_limits_test.ts`), `/healthz` answered after 2.3-4.0 s (medians of 5 checks 2.9-3.3 s)
 * and SIGTERM was handled after up to 4.6 s; with 0 ms timers, medians 0.13-1.1 s. A bare script
 * shows the same: an immediate chain of 5 ms steps beside a timer chain of 300 ms steps delays a
 * SIGTERM by 6.2 s; two timer chains, by 60 ms.
 *
 * The price: when nothing else runs, a 0 ms timer fires after 1-3 ms where an immediate takes
 * microseconds, and a group commit waits for it. Single-reading HTTP requests lost about half
 * their rate, batched ones a sixth (README "Benchmarks"). Immediates until 20 ms of chained work
 * had passed, then timers, did not keep the health checks down.
 */

/** Runs `callback` in a later turn of the event loop, after pending I/O and signals. */
export function laterTurn(callback: () => void): void {
  setTimeout(callback, 0);
}

/** Lets timers, I/O and signals run before going on (after a step that held the event loop). */
export function nextTurn(): Promise<void> {
  return new Promise((resolve) => laterTurn(resolve));
}
