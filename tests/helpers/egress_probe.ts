/**
 * Run as a child under Outpost's derived flags (see egress_test.ts). First it calls fetch,
 * node:net and Deno.connect directly at a destination outside --allow-net; then it goes through
 * the egress module with an allowlist that (wrongly) admits that destination, so that only
 * Deno's flags stop it. Prints one JSON object with what happened.
 */
import { connect } from "node:net";
import { AuditLog } from "../../src/egress/audit.ts";
import { Egress } from "../../src/egress/egress.ts";
import { createLogger } from "../../src/observability/log.ts";
import { openDatabase } from "../../src/store/database.ts";

const [dataDir, port] = [Deno.args[0], Number(Deno.args[1])];
const outcome = async (attempt: () => Promise<unknown>) => {
  try {
    await attempt();
    return "connected";
  } catch (error) {
    return (error as Error).name;
  }
};
const direct = {
  fetch: await outcome(() => fetch(`http://127.0.0.2:${port}/`)),
  nodeNet: await outcome(() =>
    new Promise((resolve, reject) => {
      const socket = connect({ host: "127.0.0.2", port });
      socket.once("connect", () => resolve(socket.destroy()));
      socket.once("error", reject);
    })
  ),
  denoConnect: await outcome(() => Deno.connect({ hostname: "127.0.0.2", port })),
};
const log = createLogger("error", () => {});
const database = await openDatabase(dataDir, log);
const audit = new AuditLog(database.client);
const egress = new Egress({
  allowed: [`127.0.0.2:${port}`],
  rateLimit: { perSecond: 100, burst: 100 },
  circuitBreaker: { failureThreshold: 100, openSeconds: 1 },
}, { audit, log });
const viaEgress = {
  fetch: await outcome(() => egress.fetch("probe", `http://127.0.0.2:${port}/`, {})),
  nodeNet: await outcome(() => egress.socket("probe", { host: "127.0.0.2", port })),
  denoConnect: await outcome(() => egress.connect("probe", { host: "127.0.0.2", port })),
  outsideManifest: await outcome(() => egress.fetch("probe", "http://198.51.100.7/", {})),
};
await audit.settled();
const rows = await audit.list(0, 100);
database.close();
console.log(JSON.stringify({ direct, viaEgress, audit: rows.map((row) => [row.destination, row.outcome]) }));
