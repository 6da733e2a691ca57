/**
 * The monitoring files shipped for sites that run Prometheus and Grafana (compile/monitoring/):
 * the alerting rules pass promtool and their own unit tests, the dashboard is an importable
 * Grafana document whose queries are valid PromQL, and every metric either uses (with the labels
 * it matches on) is in the real program's /metrics once it has ingested, scored, forwarded and
 * refused something.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { parse as parseYaml } from "yaml";
import { Collector } from "./helpers/collector.ts";
import { eventually } from "./helpers/eventually.ts";
import { postJson, PROJECT_ROOT, startOutpost, writeManifest } from "./helpers/outpost_process.ts";
import { replay, scoredThrough } from "./helpers/replay.ts";
import { simulateRecording } from "./sim/pump_simulator.ts";

const MONITORING = join(PROJECT_ROOT, "compile", "monitoring");
const RULES = join(MONITORING, "outpost.rules.yml");
const RULE_TESTS = join(MONITORING, "outpost.rules.test.yml");
const DASHBOARD = join(MONITORING, "grafana-dashboard.json");

const HAS_PROMTOOL = await new Deno.Command("sh", { args: ["-c", "command -v promtool"], stdout: "null" }).output()
  .then((output) => output.success, () => false);

/**
 * Metrics used by the rules or the dashboard that this run (no MQTT, no token auth, minutes old)
 * cannot give a series, with their labels as src/ declares them and the test that sees a series;
 * each must still be declared (`# TYPE`) in /metrics.
 */
const SERIES_NOT_EXPECTED: Record<string, { labels: string[]; seenIn: string }> = {
  outpost_dead_letters_total: { labels: ["source"], seenIn: "invalid MQTT payloads: tests/mqtt_ingest_test.ts" },
  outpost_ingest_auth_refusals_total: {
    labels: ["reason"],
    seenIn: "spec.api.ingestAuth token: tests/api_auth_tls_test.ts",
  },
  outpost_retention_deleted_total: { labels: ["table"], seenIn: "rows past retention: tests/soak_test.ts" },
};

/** Label values matched with `=` that a healthy run does not produce, and where they come from. */
const VALUES_NOT_EXPECTED: Record<string, string> = {
  'outpost_egress_attempts_total{outcome="audit_failed"}': "an audit row that cannot be committed (egress.ts)",
};

/** Labels Prometheus adds or a type carries, valid in any expression. */
const ALWAYS_LABELS = new Set(["job", "instance", "le", "quantile"]);

interface RuleFile {
  groups: { name: string; rules: { alert?: string; record?: string; expr: string }[] }[];
}

// deno-lint-ignore no-explicit-any
type Json = any;

async function run(args: string[]): Promise<{ code: number; output: string }> {
  const result = await new Deno.Command(args[0], { args: args.slice(1), stdout: "piped", stderr: "piped" }).output();
  const decode = (bytes: Uint8Array) => new TextDecoder().decode(bytes);
  return { code: result.code, output: decode(result.stdout) + decode(result.stderr) };
}

async function ruleExpressions(): Promise<{ where: string; expr: string }[]> {
  const rules = parseYaml(await Deno.readTextFile(RULES)) as RuleFile;
  return rules.groups.flatMap((group) =>
    group.rules.map((rule) => ({ where: `rule ${rule.alert ?? rule.record}`, expr: rule.expr }))
  );
}

async function dashboard(): Promise<Json> {
  return JSON.parse(await Deno.readTextFile(DASHBOARD));
}

/** Every panel, rows' nested panels included. */
function panelsOf(dash: Json): Json[] {
  return dash.panels.flatMap((panel: Json) => [panel, ...(panel.panels ?? [])]);
}

/** The PromQL of every panel target and every query variable, as written (with Grafana's variables). */
async function dashboardExpressions(): Promise<{ where: string; expr: string }[]> {
  const dash = await dashboard();
  const fromPanels = panelsOf(dash).flatMap((panel) =>
    (panel.targets ?? []).map((target: Json) => ({ where: `panel "${panel.title}"`, expr: String(target.expr) }))
  );
  const fromVariables = dash.templating.list
    .filter((variable: Json) => variable.type === "query")
    .map((variable: Json) => ({ where: `variable ${variable.name}`, expr: String(variable.query) }));
  return [...fromPanels, ...fromVariables];
}

/** Grafana's variables replaced by values that keep the expression valid PromQL. */
function substituteVariables(expr: string): string {
  return expr
    .replaceAll("$__rate_interval", "1m")
    .replaceAll("$__interval", "1m")
    .replaceAll("$__range", "1h")
    .replaceAll("$job", "outpost")
    .replace(/\$(instance|device)\b/g, ".*");
}

/** `label_values(selector, label)` (a Grafana variable query) as the PromQL selector it reads. */
function asPromQl(expr: string): string {
  const labelValues = /^label_values\((.*),\s*[a-zA-Z_][a-zA-Z0-9_]*\)$/.exec(expr.trim());
  return labelValues ? labelValues[1] : expr;
}

/** Drops the contents of quoted strings, so that names and matchers are read from PromQL alone. */
function withoutStrings(expr: string): string {
  return expr.replace(/"(?:[^"\\]|\\.)*"/g, '""');
}

function metricNames(expr: string): string[] {
  return [...new Set(withoutStrings(expr).match(/\boutpost_[a-zA-Z0-9_:]*/g) ?? [])];
}

/** `name{label op "value", ...}` selectors of outpost metrics, with their matchers. */
function selectors(expr: string): { name: string; matchers: { label: string; op: string; value: string }[] }[] {
  const found = [];
  for (const match of expr.matchAll(/\b(outpost_[a-zA-Z0-9_:]*)\s*\{([^}]*)\}/g)) {
    const matchers = [...match[2].matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"/g)]
      .map((m) => ({ label: m[1], op: m[2], value: m[3] }));
    found.push({ name: match[1], matchers });
  }
  return found;
}

/** Label names in `by (...)`, `without (...)`, `on (...)` and `ignoring (...)` clauses. */
function groupingLabels(expr: string): string[] {
  const labels = [];
  for (const match of withoutStrings(expr).matchAll(/\b(?:by|without|on|ignoring)\s*\(([^)]*)\)/g)) {
    labels.push(...match[1].split(",").map((label) => label.trim()).filter((label) => label !== ""));
  }
  return labels;
}

interface Exposition {
  types: Map<string, string>;
  /** Sample name → the label sets of its samples. */
  samples: Map<string, Record<string, string>[]>;
}

function parseExposition(text: string): Exposition {
  const types = new Map<string, string>();
  const samples = new Map<string, Record<string, string>[]>();
  for (const line of text.split("\n")) {
    const type = /^# TYPE (\S+) (\S+)$/.exec(line);
    if (type) types.set(type[1], type[2]);
    if (line === "" || line.startsWith("#")) continue;
    const sample = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? \S+$/.exec(line);
    assert.ok(sample, `Unparsable sample line: ${line}`);
    const labels: Record<string, string> = {};
    for (const pair of (sample[2] ?? "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
      labels[pair[1]] = pair[2];
    }
    samples.set(sample[1], [...(samples.get(sample[1]) ?? []), labels]);
  }
  return { types, samples };
}

/**
 * The declared metric family a name used in PromQL belongs to: itself, or for `_bucket` a
 * histogram and for `_sum`/`_count` a histogram or summary. Null when /metrics has no such family.
 */
function familyOf(name: string, types: Map<string, string>): string | null {
  if (types.has(name)) return name;
  const suffix = /^(.*)_(bucket|sum|count)$/.exec(name);
  if (!suffix) return null;
  const type = types.get(suffix[1]);
  if (suffix[2] === "bucket" ? type === "histogram" : type === "histogram" || type === "summary") return suffix[1];
  return null;
}

/** Every problem with the metrics `uses` name, against a scrape of the real program. */
function problemsAgainst(exposition: Exposition, uses: { where: string; expr: string }[]): string[] {
  const problems: string[] = [];
  for (const { where, expr } of uses) {
    const names = metricNames(expr);
    const labelsOf = (name: string) =>
      new Set([
        ...(exposition.samples.get(name) ?? []).flatMap((labels) => Object.keys(labels)),
        ...(SERIES_NOT_EXPECTED[name]?.labels ?? []),
      ]);
    for (const name of names) {
      if (familyOf(name, exposition.types) === null) {
        problems.push(`${where}: ${name} is not in /metrics`);
      } else if (!exposition.samples.has(name) && !(name in SERIES_NOT_EXPECTED)) {
        problems.push(`${where}: ${name} is declared but has no series after the scenario`);
      }
    }
    for (const { name, matchers } of selectors(expr)) {
      const present = exposition.samples.get(name);
      if (!present) continue;
      for (const { label, op, value } of matchers) {
        if (ALWAYS_LABELS.has(label)) continue;
        if (!labelsOf(name).has(label)) {
          problems.push(`${where}: ${name} has no label ${label}`);
        } else if (
          op === "=" && !present.some((labels) => labels[label] === value) &&
          !(`${name}{${label}="${value}"}` in VALUES_NOT_EXPECTED)
        ) {
          problems.push(`${where}: ${name} never has ${label}="${value}"`);
        }
      }
    }
    const known = new Set([...ALWAYS_LABELS, ...names.flatMap((name) => [...labelsOf(name)])]);
    for (const label of groupingLabels(expr)) {
      if (!known.has(label)) problems.push(`${where}: no metric of the expression has the label ${label}`);
    }
  }
  return problems;
}

async function scrape(url: string): Promise<string> {
  const response = await fetch(`${url}/metrics`);
  assert.equal(response.status, 200);
  return await response.text();
}

Deno.test({
  name: "the alerting rules pass promtool check rules",
  ignore: !HAS_PROMTOOL,
  async fn() {
    const { code, output } = await run(["promtool", "check", "rules", RULES]);
    assert.equal(code, 0, output);
    assert.match(output, /SUCCESS: \d+ rules found/);
  },
});

Deno.test({
  name:
    "the rules' unit tests pass: anomaly, store near full, forwarding stalled and circuit open fire when they should",
  ignore: !HAS_PROMTOOL,
  async fn() {
    const { code, output } = await run(["promtool", "test", "rules", RULE_TESTS]);
    assert.equal(code, 0, output);
    assert.match(output, /SUCCESS/);
  },
});

Deno.test("every alert has a severity, a plain duration in for, and a summary and description for the operator", async () => {
  const rules = parseYaml(await Deno.readTextFile(RULES)) as RuleFile;
  const alerts = rules.groups.flatMap((group) => group.rules) as Json[];
  const names = alerts.map((rule) => rule.alert);
  for (
    const expected of [
      "OutpostDown",
      "OutpostDeviceInAnomaly",
      "OutpostStoreNearFull",
      "OutpostForwardingStalled",
      "OutpostEgressCircuitOpen",
      "OutpostMemoryNearBudget",
      "OutpostAuditTamperDetected",
      "OutpostAuditVerifyStale",
      "OutpostNotReady",
    ]
  ) assert.ok(names.includes(expected), `${expected} is missing`);
  assert.equal(new Set(names).size, names.length, "alert names are unique");
  for (const rule of alerts) {
    assert.ok(["critical", "warning"].includes(rule.labels?.severity), `${rule.alert}: severity`);
    assert.ok(rule.annotations?.summary?.length > 10, `${rule.alert}: summary`);
    assert.ok(rule.annotations?.description?.length > 80, `${rule.alert}: description`);
    if (rule.for !== undefined) assert.match(rule.for, /^\d+[ms]$/, `${rule.alert}: for`);
  }
});

Deno.test("the dashboard imports anywhere: its datasource is the DS_PROMETHEUS input, panel ids are unique, panels fit the grid", async () => {
  const dash = await dashboard();
  assert.deepEqual(
    dash.__inputs.map((input: Json) => [input.name, input.type, input.pluginId]),
    [["DS_PROMETHEUS", "datasource", "prometheus"]],
  );
  assert.equal(dash.id, null, "an import creates its own id");
  assert.ok(dash.schemaVersion >= 36, "Grafana 9.x/10+ schema");
  const datasource = dash.templating.list.find((variable: Json) => variable.type === "datasource");
  assert.deepEqual([datasource.name, datasource.query, datasource.current.value], [
    "datasource",
    "prometheus",
    "${DS_PROMETHEUS}",
  ]);
  const queried = [
    ...panelsOf(dash).filter((panel) => panel.type !== "row"),
    ...panelsOf(dash).flatMap((panel) => panel.targets ?? []),
    ...dash.templating.list.filter((variable: Json) => variable.type === "query"),
  ];
  for (const item of queried) {
    assert.deepEqual(item.datasource, { type: "prometheus", uid: "${datasource}" }, JSON.stringify(item).slice(0, 200));
  }
  const ids = panelsOf(dash).map((panel) => panel.id);
  assert.equal(new Set(ids).size, ids.length, "panel ids are unique");
  for (const panel of panelsOf(dash)) {
    const { x, w, h } = panel.gridPos;
    assert.ok(x >= 0 && w > 0 && h > 0 && x + w <= 24, `panel "${panel.title}" fits the 24-column grid`);
    for (const target of panel.targets ?? []) assert.ok(target.refId && target.expr, `panel "${panel.title}"`);
  }
  const titles = panelsOf(dash).map((panel) => panel.title);
  for (
    const expected of [
      "Ingest rate by source and result",
      "Refusals by limit",
      "Store size vs limit",
      "Outbox by class",
      "Forwarded and dropped items",
      "Egress attempts by destination and outcome",
      "Circuit state by destination",
      "Devices in anomaly",
      "Score per device",
      "Commit-to-flag latency",
      "Scoring lag per device",
      "Memory",
      "HTTP latency by route",
      "Ready",
      "Readiness checks",
      "Audit chain",
    ]
  ) assert.ok(titles.includes(expected), `panel "${expected}" is missing`);
});

Deno.test({
  name: "every dashboard query is valid PromQL (checked by promtool as recording rules)",
  ignore: !HAS_PROMTOOL,
  async fn() {
    const expressions = await dashboardExpressions();
    assert.ok(expressions.length >= 30, `${expressions.length} expressions`);
    const dir = await Deno.makeTempDir();
    try {
      const rules = expressions.map(({ expr }, i) => ({
        record: `dashboard:query_${i}`,
        expr: asPromQl(substituteVariables(expr)),
      }));
      const file = join(dir, "dashboard.rules.json");
      await Deno.writeTextFile(file, JSON.stringify({ groups: [{ name: "dashboard", rules }] }));
      const { code, output } = await run(["promtool", "check", "rules", file]);
      assert.equal(code, 0, output);
      assert.match(output, new RegExp(`SUCCESS: ${expressions.length} rules found`));
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("the metric name and label readers find what the checks rely on", () => {
  const expr = 'sum by (job, instance) (increase(outpost_egress_attempts_total{outcome="audit_failed", ' +
    'destination=~"a.b:1"}[10m])) > 0 unless on (instance) outpost_http_request_duration_seconds_bucket{le="1"}';
  assert.deepEqual(metricNames(expr), [
    "outpost_egress_attempts_total",
    "outpost_http_request_duration_seconds_bucket",
  ]);
  assert.deepEqual(metricNames('up{job="outpost_x"}'), [], "names inside strings are not metrics");
  assert.deepEqual(selectors(expr)[0].matchers, [
    { label: "outcome", op: "=", value: "audit_failed" },
    { label: "destination", op: "=~", value: "a.b:1" },
  ]);
  assert.deepEqual(groupingLabels(expr), ["job", "instance", "instance"]);
  const types = new Map([["h_seconds", "histogram"], ["s_seconds", "summary"], ["c_total", "counter"]]);
  assert.equal(familyOf("h_seconds_bucket", types), "h_seconds");
  assert.equal(familyOf("s_seconds_count", types), "s_seconds");
  assert.equal(familyOf("s_seconds_bucket", types), null, "a summary has no buckets");
  assert.equal(familyOf("c_total_sum", types), null);
  assert.equal(
    asPromQl('label_values(outpost_device_score{job=~"$job"}, device)'),
    'outpost_device_score{job=~"$job"}',
  );
  const exposition = parseExposition(
    '# TYPE outpost_egress_attempts_total counter\noutpost_egress_attempts_total{destination="a",outcome="ok"} 1\n',
  );
  assert.deepEqual(problemsAgainst(exposition, [{ where: "x", expr: 'outpost_egress_attempts_total{outcom="ok"}' }]), [
    "x: outpost_egress_attempts_total has no label outcom",
  ]);
  assert.deepEqual(
    problemsAgainst(exposition, [{ where: "x", expr: 'outpost_egress_attempts_total{outcome="okay"}' }]),
    [
      'x: outpost_egress_attempts_total never has outcome="okay"',
    ],
  );
  assert.deepEqual(
    problemsAgainst(exposition, [{ where: "x", expr: "sum by (sink) (outpost_egress_attempts_total)" }]),
    [
      "x: no metric of the expression has the label sink",
    ],
  );
  assert.deepEqual(problemsAgainst(exposition, [{ where: "x", expr: "outpost_forwarded_items_total" }]), [
    "x: outpost_forwarded_items_total is not in /metrics",
  ]);
});

Deno.test("every metric the rules and the dashboard use is in the real program's /metrics, with the labels they match on", async () => {
  const dir = await Deno.makeTempDir();
  const collector = await Collector.create({ up: false });
  const outpost = await startOutpost(
    await writeManifest(dir, {
      egressAllowed: [collector.destination],
      circuitOpenSeconds: 1,
      detection: ["calibration: { readings: 50 }"],
      forwarding: [
        "aggregateSeconds: 10",
        "graceSeconds: 0",
        "idleCloseSeconds: 2",
        // A few aggregates fill it: the overflow drops are counted while the collector is down.
        "maxBufferMB: 0.002",
        "backoff: { minMs: 50, maxMs: 400 }",
        `http: { url: "${collector.url}" }`,
      ],
      logLevel: "warn",
    }),
  );
  try {
    const device = "pump-7";
    const recording = simulateRecording({ seed: 11, fault: "step", calibration: 50, seconds: 400 });
    const lastTs = recording.readings.at(-1)!.ts;
    await replay(outpost.url, device, recording.readings);
    await scoredThrough(outpost.url, device, lastTs, 30_000);
    // A reading without any of the model's sensors is left unscored (sensors_missing).
    const unscorable = await postJson(`${outpost.url}/v1/readings`, { device, ts: lastTs + 1000, values: { x: 1 } });
    assert.equal(unscorable.status, 202);
    await unscorable.body?.cancel();
    // A body over spec.api.bodyLimitBytes is refused and counted by its limit.
    const oversize = await postJson(`${outpost.url}/v1/readings`, "x".repeat(300 * 1024));
    assert.equal(oversize.status, 413);
    await oversize.body?.cancel();

    await eventually(
      () => scrape(outpost.url),
      (text) =>
        /outpost_egress_circuit_state\{destination="[^"]+"\} 2/.test(text) &&
        /outpost_outbox_dropped_total\{class="aggregate",reason="overflow"\} [1-9]/.test(text) &&
        /outpost_unscored_readings_total\{reason="sensors_missing"\} [1-9]/.test(text) &&
        /outpost_anomaly_episodes_total\{change="[a-z]+"\} [1-9]/.test(text),
      20_000,
    );
    collector.start();
    const text = await eventually(
      () => scrape(outpost.url),
      (text) => /outpost_forwarded_items_total\{sink="http",class="[a-z]+"\} [1-9]/.test(text),
      20_000,
    );
    const exposition = parseExposition(text);
    const uses = [...await ruleExpressions(), ...await dashboardExpressions()];
    const used = new Set(uses.flatMap(({ expr }) => metricNames(expr)));
    assert.ok(used.size >= 30, `${used.size} metrics used`);
    assert.deepEqual(problemsAgainst(exposition, uses), []);
    for (const name of Object.keys(SERIES_NOT_EXPECTED)) {
      assert.ok(used.has(name), `${name} is no longer used: drop it from SERIES_NOT_EXPECTED`);
      assert.ok(exposition.types.has(name), `${name} is declared`);
    }
    const anomaly = exposition.samples.get("outpost_device_anomaly") ?? [];
    assert.deepEqual(anomaly.map((labels) => labels.device), [device], "the device's series is there");
  } finally {
    await outpost.stop();
    await collector.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("outpost_audit_tamper_detected is 0 on a clean start and 1 when the audit head file was removed, and stays 1 while verify finds it", async () => {
  const dir = await Deno.makeTempDir();
  const collector = await Collector.create();
  const manifest = await writeManifest(dir, {
    egressAllowed: [collector.destination],
    forwarding: ["raw: true", "backoff: { minMs: 50, maxMs: 400 }", `http: { url: "${collector.url}" }`],
    logLevel: "warn",
  });
  const verified = (outpost: { url: string }) =>
    eventually(() => fetch(`${outpost.url}/v1/egress/audit/verify`).then((r) => r.json()), (s) => s.last !== null);
  let outpost = await startOutpost(manifest);
  try {
    const response = await postJson(`${outpost.url}/v1/readings`, { device: "d", ts: Date.now(), values: { a: 1 } });
    assert.equal(response.status, 202);
    await response.body?.cancel();
    // Forwarded: keyed audit rows exist, and the head file names them.
    await eventually(() => collector.items().length, (count) => count >= 1, 20_000);
    assert.match(await scrape(outpost.url), /^outpost_audit_tamper_detected 0$/m);
    await outpost.stop();
    outpost = await startOutpost(manifest);
    assert.match(await scrape(outpost.url), /^outpost_audit_tamper_detected 0$/m, "a clean restart finds nothing");
    assert.equal((await verified(outpost)).state, "ok");
    assert.match(await scrape(outpost.url), /^outpost_audit_tamper_detected 0$/m, "nor does the walk after it");
    await outpost.stop();

    await Deno.remove(join(dir, "data", "audit-head.json"));
    outpost = await startOutpost(manifest);
    assert.match(await scrape(outpost.url), /^outpost_audit_tamper_detected 1$/m);
    assert.match(outpost.log(), /audit\.tamper_detected/);
    await outpost.stop();
    // The next start finds the head it wrote again, but its walk still reports the log not intact.
    outpost = await startOutpost(manifest);
    const status = await verified(outpost);
    assert.deepEqual([status.state, status.last.problem], ["failed", "head_recreated"]);
    assert.match(await scrape(outpost.url), /^outpost_audit_tamper_detected 1$/m);
  } finally {
    await outpost.stop();
    await collector.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("outpost_ready and outpost_readiness_check follow /readyz: 1 and every check 2 when ready, 0 and the failing check 0 when not", async () => {
  const dir = await Deno.makeTempDir();
  await Deno.mkdir(join(dir, "full"));
  await Deno.mkdir(join(dir, "ok"));
  // A store limit below what an empty migrated store takes: the store check fails from the start.
  const full = await startOutpost(await writeManifest(join(dir, "full"), { maxSizeMB: 0.01, logLevel: "error" }), {
    waitReady: false,
  });
  const ready = await startOutpost(await writeManifest(join(dir, "ok"), { logLevel: "warn" }));
  try {
    const text = await scrape(ready.url);
    assert.match(text, /^outpost_ready 1$/m);
    for (const check of ["store", "http_intake", "detection", "mqtt_broker", "forwarding"]) {
      assert.match(text, new RegExp(`^outpost_readiness_check\\{check="${check}"\\} 2$`, "m"), check);
    }
    const notReady = await eventually(
      async () => {
        const response = await fetch(`${full.url}/readyz`).catch(() => null);
        return response && { status: response.status, text: await scrape(full.url), body: await response.json() };
      },
      (seen) => seen?.status === 503,
      20_000,
    );
    assert.match(notReady!.text, /^outpost_ready 0$/m);
    assert.match(notReady!.text, /^outpost_readiness_check\{check="store"\} 0$/m);
    assert.match(notReady!.text, /^outpost_readiness_check\{check="http_intake"\} 2$/m);
  } finally {
    await full.stop();
    await ready.stop();
    await Deno.remove(dir, { recursive: true });
  }
});
