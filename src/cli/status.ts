import { Option, type Command, type OptionValues } from "commander";
import { collect } from "./options.ts";

// What `meshward status` accepts; what it does is in ./actions/status.ts, loaded when it runs.
const actions = () => import("./actions/status.ts");

export function registerStatusCommand(program: Command): void {
  program
    .command("status")
    .description("one table for the mesh: the CA and each sidecar or identity's certificates, expiry, health and last rotation; exit 1 if anything is unhealthy or unreachable")
    .option("--ca <addr>", "CA address HOST:PORT, or the replicas' comma-separated (with --bundle)")
    .option("--bundle <file>", "trust bundle to verify the CA with")
    .option("--status-url <url>", "a sidecar's or identity's status endpoint, e.g. http://127.0.0.1:9090 (repeatable)", collect)
    .option("--status-token-file <file>", "file holding the bearer token for status endpoints that require one (or MESHWARD_STATUS_TOKEN)")
    // Refused with the way out: a token given here is readable by every local user (ps).
    .addOption(new Option("--status-token <token>").hideHelp())
    .option("--json", "print JSON")
    .action(async (opts: OptionValues) => (await actions()).runStatus(opts));
}
