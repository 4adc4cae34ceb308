import type { Command } from "commander";
import { registerAuditCommand } from "./audit.ts";
import { registerCaCommand } from "./ca.ts";
import { registerCertCommand } from "./cert.ts";
import { registerDemoCommand } from "./demo.ts";
import { registerIdentityCommand } from "./identity.ts";
import { registerSidecarCommand } from "./sidecar.ts";
import { registerStatusCommand } from "./status.ts";
import { registerTokenCommand } from "./token.ts";

/** Every CLI command is registered here, one module per command (DESIGN.md: src/cli). */
export function registerCommands(program: Command): void {
  registerAuditCommand(program);
  registerCaCommand(program);
  registerTokenCommand(program);
  registerCertCommand(program);
  registerIdentityCommand(program);
  registerStatusCommand(program);
  registerDemoCommand(program);
  registerSidecarCommand(program);
}
