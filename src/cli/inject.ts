import type { Command } from "commander";
import { packageVersion } from "../util/package-files.ts";
import type { InjectCommandOptions } from "./actions/inject.ts";

// What `meshward inject` accepts; what it does is in ./actions/inject.ts, loaded when it runs.
const actions = () => import("./actions/inject.ts");

export const DEFAULT_CA_ADDRESS = "meshward-ca.meshward-system.svc:8443";
export const DEFAULT_AUDIENCE = "meshward";
export const defaultImage = (): string => `meshward:${packageVersion()}`;

/** Options shared by `meshward inject` and `meshward injector`. */
export function addInjectOptions(command: Command): Command {
  return command
    .requiredOption("--trust-anchors <file>", "the CA's trust bundle (PEM, its bundle.pem); put in the sidecar's MESHWARD_TRUST_ANCHORS")
    .option("--image <image>", "sidecar image", defaultImage())
    .option("--ca-address <host:port>", "the CA as sidecars dial it", DEFAULT_CA_ADDRESS)
    .option("--audience <aud>", "audience of the projected service-account token (the CA's jwks.audience)", DEFAULT_AUDIENCE);
}

export function registerInjectCommand(program: Command): void {
  addInjectOptions(
    program
      .command("inject")
      .description(
        "add the meshward sidecar to Kubernetes manifests whose pod templates are annotated meshward.io/inject: \"true\" (or dapr.io/enabled: \"true\"); prints the manifests on stdout, every other document unchanged",
      )
      .argument("[file]", "YAML or JSON manifest (several documents allowed); - or nothing reads stdin", "-"),
  )
    .option("--quiet", "do not print notes (ServiceAccounts to create, pods without a policy) on stderr")
    .action(async (file: string, opts: InjectCommandOptions) => (await actions()).runInject(file, opts));
}
