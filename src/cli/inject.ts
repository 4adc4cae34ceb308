import { readFileSync } from "node:fs";
import type { Command } from "commander";
import { MeshwardError } from "../errors.ts";
import { readBundleFile } from "../identity/bundle-file.ts";
import { injectManifest } from "../inject/manifest.ts";
import type { InjectOptions } from "../inject/settings.ts";
import { packageVersion } from "../util/package-files.ts";

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

export function injectOptionsFrom(opts: { trustAnchors: string; image: string; caAddress: string; audience: string }): InjectOptions {
  return { trustAnchors: readBundleFile(opts.trustAnchors), image: opts.image, caAddress: opts.caAddress, audience: opts.audience };
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
    .action((file: string, opts: { trustAnchors: string; image: string; caAddress: string; audience: string; quiet?: boolean }) => {
      const options = injectOptionsFrom(opts);
      let text: string;
      try {
        text = readFileSync(file === "-" ? 0 : file, "utf8");
      } catch (error) {
        throw new MeshwardError("E_FILE_MISSING", `cannot read ${file === "-" ? "stdin" : file}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
      }
      const result = injectManifest(text, options, file === "-" ? "stdin" : file);
      process.stdout.write(result.text);
      if (opts.quiet !== true) {
        for (const note of result.notes) process.stderr.write(`note: ${note}\n`);
        process.stderr.write(`injected ${result.injected.length} pod template${result.injected.length === 1 ? "" : "s"}${result.injected.length > 0 ? `: ${result.injected.join(", ")}` : ""}\n`);
      }
    });
}
