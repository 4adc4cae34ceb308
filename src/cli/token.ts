import type { Command, OptionValues } from "commander";
import { checkCaDirOption, collect } from "./options.ts";

// What `meshward token` accepts; what it does is in ./actions/token.ts, loaded when it runs.
const actions = () => import("./actions/token.ts");

export function registerTokenCommand(program: Command): void {
  const token = program.command("token").description("join tokens: one-time proof of identity for a workload's first certificate").hook("preAction", checkCaDirOption);
  token
    .command("create")
    .description("create a join token bound to one workload identity; prints the token alone on the last line")
    .requiredOption("--dir <dir>", "CA directory")
    .requiredOption("--namespace <ns>", "workload namespace")
    .requiredOption("--app-id <id>", "workload app id")
    .option("--ttl <duration>", "how long the token can be used", "1h")
    .option("--uses <n>", "how many certificates it can obtain", "1")
    .option("--dns-name <name>", "DNS name the holder may put in its certificate (repeatable; for backend servers)", collect)
    .option("--common-name", "certificates obtained with this token (and their renewals) carry the subject CN = <app id>, e.g. for PostgreSQL's cert authentication, which maps the CN to a role")
    .option("--store <url>", "store URL (default: <dir>/ca.db)")
    .action(async (opts: OptionValues) => (await actions()).tokenCreate(opts));
}
