import type { Command, OptionValues } from "commander";
import { collect, logFormatOption, logLevelOption, validatorOption } from "./options.ts";

// What `meshward identity` accepts; what it does is in ./actions/identity.ts, loaded when it runs.
const actions = () => import("./actions/identity.ts");

/** --validator: the CLI's names, and what the CA API calls them. */
export const VALIDATORS = { "join-token": "JOIN_TOKEN", jwks: "JWKS", kubernetes: "KUBERNETES", insecure: "INSECURE" } as const;

export function registerIdentityCommand(program: Command): void {
  program
    .command("identity")
    .description("keep a workload identity fresh: get it from the CA, renew it before expiry, and hand it to files on disk and the SPIFFE Workload API")
    .requiredOption("--ca <addr>", "CA address HOST:PORT, or the replicas' addresses comma-separated")
    .requiredOption("--bundle <file>", "bootstrap trust bundle (PEM) that the CA's certificate must chain to")
    .option("--token <token>", "join token or JWT for the first certificate; visible to every local user in the process list (warned): prefer --token-file or MESHWARD_TOKEN")
    .option("--token-file <file>", "file holding the token, re-read at each use (Kubernetes projected tokens rotate)")
    .addOption(validatorOption("--validator <name>", "how the CA checks the token", Object.keys(VALIDATORS), "join-token"))
    .option("--namespace <ns>", "namespace to ask for (checked against what the CA issues)")
    .option("--app-id <id>", "app id to ask for (checked against what the CA issues)")
    .option("--dns-name <name>", "DNS name for the certificate (repeatable; the token must allow it)", collect)
    .option("--out <dir>", "write cert.pem, key.pem (0600), bundle.pem and crl.pem (every CRL in force, one PEM block per issuer) here on every rotation and CRL change (created 0700 when missing; refused when another user can write to it); a valid certificate left here by an earlier run renews the identity without a new token")
    .option("--owner <user[:group]>", "owner of the files written to --out (e.g. postgres, whose server requires its key file to be its own); needs root unless it is you")
    .option("--mode <octal>", "mode of key.pem in --out: 0600, 0400, 0640 or 0440 (group-readable, e.g. --owner root:postgres --mode 0640) (default: 0600)")
    .option("--on-rotate <command>", "shell command run after each write, retried with backoff while it fails (e.g. 'nginx -s reload'; as root for a server run as another user: 'runuser -u postgres -- pg_ctl reload -D DATA')")
    .option("--workload-api-socket <path>", "serve the SPIFFE Workload API on this unix socket")
    .option("--workload-api-socket-mode <octal>", "mode of the Workload API socket: 0600 (this user and root), 0660 (its group too) or 0666 (every local user); whoever can connect gets the identity and its private key (default: 0600)")
    .option("--workload-api-socket-group <group>", "group of the Workload API socket (name or gid; with --workload-api-socket-mode 0660): a group of yours, or any as root")
    .option("--status <addr>", "serve /metrics, /healthz, /readyz and the status page (/) on HOST:PORT")
    .option("--status-token-file <file>", "token for the status page (required when --status is not on loopback; or MESHWARD_STATUS_TOKEN)")
    .option("--bundle-refresh-interval <duration>", "how often the trust bundle and CRL are fetched from the CA (at least 1s)", "60s")
    .addOption(logFormatOption())
    .addOption(logLevelOption())
    .action(async (opts: OptionValues) => (await actions()).runIdentity(opts));
}
