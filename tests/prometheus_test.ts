import assert from "node:assert/strict";
import {
  CONTENT_TYPE,
  Counter,
  Gauge,
  Histogram,
  Registry,
  Summary,
  SUMMARY_SAMPLES_PER_BUCKET,
} from "../src/observability/prometheus.ts";

const HAS_PROMTOOL = await new Deno.Command("sh", { args: ["-c", "command -v promtool"], stdout: "null" }).output()
  .then((output) => output.success, () => false);

/** The sample lines of `name` (without HELP and TYPE). */
function samples(text: string, name: string): string[] {
  return text.split("\n").filter((line) => line.startsWith(`${name}{`) || line.startsWith(`${name} `));
}

Deno.test("label values escape backslash, double quote and newline; help escapes backslash and newline", async () => {
  const registry = new Registry();
  const gauge = new Gauge({
    name: "t_gauge",
    help: "A help with a \\ backslash and a\nnewline",
    labelNames: ["device"] as const,
    registers: [registry],
  });
  gauge.set({ device: 'b "quoted"\\\nnext' }, 2.5);
  const text = await registry.metrics();
  assert.equal(
    text,
    "# HELP t_gauge A help with a \\\\ backslash and a\\nnewline\n" +
      "# TYPE t_gauge gauge\n" +
      't_gauge{device="b \\"quoted\\"\\\\\\nnext"} 2.5\n',
  );
  assert.equal(registry.contentType, "text/plain; version=0.0.4; charset=utf-8");
  assert.equal(registry.contentType, CONTENT_TYPE);
});

Deno.test("a metric without labels shows 0 until used; a labelled one shows no series until used", async () => {
  const registry = new Registry();
  new Counter({ name: "t_plain_total", help: "plain", registers: [registry] });
  new Counter({ name: "t_labelled_total", help: "labelled", labelNames: ["a"] as const, registers: [registry] });
  assert.equal(
    await registry.metrics(),
    "# HELP t_plain_total plain\n# TYPE t_plain_total counter\nt_plain_total 0\n\n" +
      "# HELP t_labelled_total labelled\n# TYPE t_labelled_total counter\n",
  );
});

Deno.test("a counter adds per label set, in labelNames order, and refuses to go down", async () => {
  const registry = new Registry();
  const counter = new Counter({
    name: "t_total",
    help: "h",
    labelNames: ["source", "result"] as const,
    registers: [registry],
  });
  counter.inc({ result: "stored", source: "http" }, 5);
  counter.inc({ source: "http", result: "stored" });
  counter.inc({ source: "mqtt", result: "invalid" });
  counter.inc({ source: "mqtt", result: "invalid" }, 0);
  assert.deepEqual(samples(await registry.metrics(), "t_total"), [
    't_total{source="http",result="stored"} 6',
    't_total{source="mqtt",result="invalid"} 1',
  ]);
  assert.throws(() => counter.inc({ source: "http", result: "stored" }, -1), RangeError);
  assert.throws(() => counter.inc({ source: "http", result: "stored" }, NaN), RangeError);
  assert.throws(() => counter.inc({ source: "http", nope: "x" } as never), TypeError);
});

Deno.test("a removed gauge series is gone from the output until it is set again", async () => {
  const registry = new Registry();
  const gauge = new Gauge({
    name: "t_device_score",
    help: "h",
    labelNames: ["device"] as const,
    registers: [registry],
  });
  gauge.set({ device: "a" }, 1);
  gauge.set({ device: "b" }, -Infinity);
  gauge.inc({ device: "a" }, 2);
  gauge.dec({ device: "a" });
  assert.deepEqual(samples(await registry.metrics(), "t_device_score"), [
    't_device_score{device="a"} 2',
    't_device_score{device="b"} -Inf',
  ]);
  gauge.remove({ device: "a" });
  gauge.remove({ device: "never-set" });
  assert.deepEqual(samples(await registry.metrics(), "t_device_score"), ['t_device_score{device="b"} -Inf']);
  gauge.set({ device: "a" }, 0.1 + 0.2);
  assert.deepEqual(samples(await registry.metrics(), "t_device_score"), [
    't_device_score{device="b"} -Inf',
    't_device_score{device="a"} 0.30000000000000004',
  ]);
});

Deno.test("a gauge's collect callback runs before each render", async () => {
  const registry = new Registry();
  let quarantined = 3;
  new Gauge({
    name: "t_quarantined",
    help: "h",
    registers: [registry],
    async collect() {
      await Promise.resolve();
      this.set(quarantined);
    },
  });
  assert.deepEqual(samples(await registry.metrics(), "t_quarantined"), ["t_quarantined 3"]);
  quarantined = 1;
  assert.deepEqual(samples(await registry.metrics(), "t_quarantined"), ["t_quarantined 1"]);
});

Deno.test("histogram buckets are cumulative up to +Inf, with le first, then _sum and _count", async () => {
  const registry = new Registry();
  const histogram = new Histogram({
    name: "t_seconds",
    help: "h",
    labelNames: ["route"] as const,
    buckets: [1, 0.1, 0.5],
    registers: [registry],
  });
  for (const value of [0.05, 0.1, 0.3, 2, 7]) histogram.observe({ route: "/x" }, value);
  assert.deepEqual(samples(await registry.metrics(), "t_seconds_bucket"), [
    't_seconds_bucket{le="0.1",route="/x"} 2',
    't_seconds_bucket{le="0.5",route="/x"} 3',
    't_seconds_bucket{le="1",route="/x"} 3',
    't_seconds_bucket{le="+Inf",route="/x"} 5',
  ]);
  const text = await registry.metrics();
  assert.deepEqual(samples(text, "t_seconds_sum"), ['t_seconds_sum{route="/x"} 9.45']);
  assert.deepEqual(samples(text, "t_seconds_count"), ['t_seconds_count{route="/x"} 5']);

  const plain = new Histogram({ name: "t_plain_seconds", help: "h", buckets: [1], registers: [registry] });
  assert.deepEqual(samples(await registry.metrics(), "t_plain_seconds_bucket"), [
    't_plain_seconds_bucket{le="1"} 0',
    't_plain_seconds_bucket{le="+Inf"} 0',
  ]);
  plain.observe(1);
  assert.deepEqual(samples(await registry.metrics(), "t_plain_seconds_bucket"), [
    't_plain_seconds_bucket{le="1"} 1',
    't_plain_seconds_bucket{le="+Inf"} 1',
  ]);
});

Deno.test("summary quantiles are observed values of the window; _sum and _count cover all time", async () => {
  const registry = new Registry();
  const summary = new Summary({
    name: "t_latency_seconds",
    help: "h",
    percentiles: [0.5, 0.9, 0.99],
    maxAgeSeconds: 1,
    ageBuckets: 2,
    registers: [registry],
  });
  assert.deepEqual(samples(await registry.metrics(), "t_latency_seconds"), [
    't_latency_seconds{quantile="0.5"} NaN',
    't_latency_seconds{quantile="0.9"} NaN',
    't_latency_seconds{quantile="0.99"} NaN',
  ], "an empty window has no quantiles");
  for (let i = 100; i >= 1; i--) summary.observe(i);
  let text = await registry.metrics();
  assert.deepEqual(samples(text, "t_latency_seconds"), [
    't_latency_seconds{quantile="0.5"} 50',
    't_latency_seconds{quantile="0.9"} 90',
    't_latency_seconds{quantile="0.99"} 99',
  ]);
  assert.deepEqual(samples(text, "t_latency_seconds_sum"), ["t_latency_seconds_sum 5050"]);
  assert.deepEqual(samples(text, "t_latency_seconds_count"), ["t_latency_seconds_count 100"]);

  await new Promise((resolve) => setTimeout(resolve, 1100));
  summary.observe(7);
  text = await registry.metrics();
  assert.deepEqual(samples(text, "t_latency_seconds"), [
    't_latency_seconds{quantile="0.5"} 7',
    't_latency_seconds{quantile="0.9"} 7',
    't_latency_seconds{quantile="0.99"} 7',
  ], "observations older than maxAgeSeconds have left the quantiles");
  assert.deepEqual(samples(text, "t_latency_seconds_count"), ["t_latency_seconds_count 101"]);
});

Deno.test("a summary keeps a bounded sample per age bucket and still estimates its quantiles", async () => {
  const registry = new Registry();
  const summary = new Summary({
    name: "t_many_seconds",
    help: "h",
    percentiles: [0.5, 0.9],
    maxAgeSeconds: 600,
    ageBuckets: 1,
    registers: [registry],
  });
  const n = SUMMARY_SAMPLES_PER_BUCKET * 40;
  for (let i = 1; i <= n; i++) summary.observe(i);
  const text = await registry.metrics();
  const quantile = (q: string) => Number(new RegExp(`t_many_seconds\\{quantile="${q}"\\} (\\S+)`).exec(text)![1]);
  // A uniform sample of 512 of 20,480: the standard error of the median is about 2% of n.
  assert.ok(Math.abs(quantile("0.5") - n * 0.5) < n * 0.1, text);
  assert.ok(Math.abs(quantile("0.9") - n * 0.9) < n * 0.1, text);
  assert.deepEqual(samples(text, "t_many_seconds_count"), [`t_many_seconds_count ${n}`]);
});

Deno.test("a registry refuses a second metric of the same name, and bad names", () => {
  const registry = new Registry();
  new Counter({ name: "t_total", help: "h", registers: [registry] });
  assert.throws(() => new Gauge({ name: "t_total", help: "h", registers: [registry] }), TypeError);
  assert.throws(() => new Gauge({ name: "t-total", help: "h" }), TypeError);
  assert.throws(() => new Histogram({ name: "t_h", help: "h", labelNames: ["le"] as const, buckets: [1] }), TypeError);
});

Deno.test({
  name: "the exposition of every metric type passes promtool check metrics",
  ignore: !HAS_PROMTOOL,
  async fn() {
    const registry = new Registry();
    new Counter({ name: "t_requests_total", help: "Requests", labelNames: ["code"] as const, registers: [registry] })
      .inc({ code: 'a"\\\nb' }, 2);
    new Gauge({ name: "t_temperature_celsius", help: "Temperature\nnow", registers: [registry] }).set(NaN);
    new Histogram({
      name: "t_duration_seconds",
      help: "Durations",
      labelNames: ["route"] as const,
      buckets: [0.1, 1],
      registers: [registry],
    }).observe({ route: "/" }, 0.2);
    new Summary({
      name: "t_delay_seconds",
      help: "Delays",
      percentiles: [0.5, 0.99],
      maxAgeSeconds: 60,
      ageBuckets: 2,
      registers: [registry],
    }).observe(0.01);
    const promtool = new Deno.Command("promtool", {
      args: ["check", "metrics"],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const writer = promtool.stdin.getWriter();
    await writer.write(new TextEncoder().encode(await registry.metrics()));
    await writer.close();
    const output = await promtool.output();
    const said = new TextDecoder().decode(output.stdout) + new TextDecoder().decode(output.stderr);
    assert.equal(output.code, 0, said);
    assert.equal(said.trim(), "");
  },
});
