import { Option, type Command, type OptionValues } from "commander";
import type { ValidatorChoice } from "../identity/ca-client.ts";
import { checkCaDirOption, collect, validatorOption } from "./options.ts";

// What `meshward cert` accepts; what it does is in ./actions/cert.ts, loaded when it runs.
const actions = () => import("./actions/cert.ts");

/** --validator: the CLI's names, and what the CA API calls them. */
export const VALIDATOR_CHOICES: Record<string, ValidatorChoice> = {
  "join-token": "JOIN_TOKEN",
  jwks: "JWKS",
  kubernetes: "KUBERNETES",
  insecure: "INSECURE",
};

export function registerCertCommand(program: Command): void {
  const cert = program.command("cert").description("workload certificates: issue, list, revoke, inspect").hook("preAction", checkCaDirOption);

  cert
    .command("issue")
    .description("get a workload certificate from a CA: the key is made here and never leaves this host")
    .requiredOption("--ca <addr>", "CA address HOST:PORT, or the replicas' addresses comma-separated")
    .requiredOption("--bundle <file>", "trust bundle (PEM) that the CA's certificate must chain to")
    .option("--token <token>", "join token or JWT; visible to every local user in the process list (warned): prefer --token-file or MESHWARD_TOKEN")
    .option("--token-file <file>", "file holding the token")
    .requiredOption("--out <dir>", "directory for cert.pem, key.pem (0600) and bundle.pem")
    .addOption(validatorOption("--validator <name>", "how the CA checks the token", Object.keys(VALIDATOR_CHOICES), "join-token"))
    .option("--namespace <ns>", "namespace to ask for (must match what the token proves)", "")
    .option("--app-id <id>", "app id to ask for (must match what the token proves)", "")
    .option("--trust-domain <td>", "trust domain (default: read from the bundle's root)")
    .option("--dns-name <name>", "DNS name to request (repeatable; the token must allow it)", collect)
    .option("--ca-spiffe-id <id>", "SPIFFE ID the CA presents, when it runs with --serving-spiffe-id (default: spiffe://<td>/ns/meshward-system/meshward-ca)")
    .option("--json", "print the result as JSON")
    .action(async (opts: OptionValues) => (await actions()).certIssue(opts));

  cert
    .command("list")
    .description("list the certificates this CA issued")
    .requiredOption("--dir <dir>", "CA directory")
    .option("--store <url>", "store URL (default: <dir>/ca.db)")
    .option("--spiffe-id <id>", "only this identity")
    .option("--root <fingerprint>", "only certificates that chain to this root (SHA-256 fingerprint as 'meshward ca status' prints it; colons optional)")
    .option("--valid", "only certificates within their validity period now")
    .option("--live", "only live certificates: valid now, not revoked, not superseded by a renewal (what 'ca rotate-root retire' waits for)")
    .option("--limit <n>", "at most this many (newest first)", "100")
    .option("--json", "print JSON")
    .action(async (opts: OptionValues) => (await actions()).certList(opts));

  cert
    .command("revoke")
    .description("revoke by serial or by SPIFFE ID (every unexpired certificate of it), with every certificate renewed from it; the CA re-signs its CRL within a second")
    .requiredOption("--dir <dir>", "CA directory")
    .option("--serial <serial>", "certificate serial (hex, colons allowed)")
    .option("--spiffe-id <id>", "revoke every unexpired certificate of this identity")
    .addOption(new Option("--reason <reason>", "CRL reason").choices(["unspecified", "keyCompromise", "affiliationChanged", "superseded", "cessationOfOperation"]).default("unspecified"))
    .option("--store <url>", "store URL (default: <dir>/ca.db)")
    .action(async (opts: OptionValues) => (await actions()).certRevoke(opts));

  cert
    .command("inspect")
    .description("show a certificate's SPIFFE ID, issuer and validity in words; exit 1 when it expires within --warn")
    .argument("<file>", "PEM certificate (the first certificate of a chain is inspected)")
    .option("--warn <duration>", "exit non-zero when less than this is left (e.g. 7d)")
    .option("--json", "print JSON")
    .action(async (file: string, opts: OptionValues) => (await actions()).certInspect(file, opts));
}
