/**
 * `deno task start`: derives the permission flags from the manifest (the same code that feeds
 * `deno compile`) and runs `main.ts` under exactly those flags, forwarding signals and the exit
 * status. Arguments are those of `main.ts` (`run` when no command is given).
 */
import { join } from "node:path";
import { parseCommand, UsageError } from "../src/config/cli.ts";
import { SERVICE_ENV } from "../src/permissions/flags.ts";
import { loadConfig } from "../src/config/config.ts";
import { ConfigError } from "../src/config/errors.ts";
import { runtimeFlags } from "../src/permissions/flags.ts";

const PROJECT_ROOT = join(import.meta.dirname!, "..");

async function launch(args: string[]): Promise<number> {
  let flags: string[] = [];
  try {
    const command = parseCommand(args);
    if (
      command.name === "upgrade" || command.name === "rollback" || command.name === "resume" ||
      command.name === "service"
    ) {
      console.error(`${command.name} runs from an installed release: <root>/current/outpost ${command.name} ...`);
      return 2;
    }
    if (command.name === "sign" || command.name === "keygen") {
      // The build side: reads the key and the files, writes the .sig files (or the new key).
      flags = ["--allow-read", "--allow-write"];
    } else if (command.name === "version") {
      flags = ["--allow-read"];
    } else if (command.name !== "help") {
      const config = await loadConfig(command.manifest, {
        dataDir: "dataDir" in command ? command.dataDir : undefined,
      });
      flags = runtimeFlags(config, { projectRoot: PROJECT_ROOT });
    }
  } catch (error) {
    if (error instanceof UsageError || error instanceof ConfigError) {
      console.error(error instanceof UsageError ? `${error.message}\n\n${error.usage}` : error.message);
      return 2;
    }
    throw error;
  }
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--cached-only", ...flags, join(PROJECT_ROOT, "main.ts"), ...args],
    env: SERVICE_ENV,
    stdin: "inherit",
    stdout: "inherit",
    stderr: "inherit",
  }).spawn();
  const forward = (signal: Deno.Signal) => () => {
    try {
      child.kill(signal);
    } catch { /* already exited */ }
  };
  const onInt = forward("SIGINT");
  const onTerm = forward("SIGTERM");
  Deno.addSignalListener("SIGINT", onInt);
  Deno.addSignalListener("SIGTERM", onTerm);
  const status = await child.status;
  // The listeners stay until exit: a late second Ctrl-C must not kill the launcher with 130.
  return status.signal ? 128 + signalNumber(status.signal) : status.code;
}

function signalNumber(signal: Deno.Signal): number {
  return ({ SIGINT: 2, SIGKILL: 9, SIGTERM: 15 } as Record<string, number>)[signal] ?? 1;
}

Deno.exit(await launch(Deno.args));
