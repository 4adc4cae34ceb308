import { Option, type Command, type OptionValues } from "commander";
import { KEY_ALGORITHMS } from "../pki/keys.ts";
import { checkCaDirOption, collect, logFormatOption, logLevelOption, validatorOption } from "./options.ts";

// What `meshward ca` accepts; what it does is in ./actions/ca.ts, loaded when it runs (`ca serve`:
// ./actions/ca-serve.ts, so that the short subcommands do not load the CA server).
const actions = () => import("./actions/ca.ts");
const serveAction = () => import("./actions/ca-serve.ts");

/** The opt-in of src/ca/root-scope.ts (spelled here too: help loads nothing of the CA). */
const TRUST_EVERY_CA_FLAG = "--trust-every-ca-under-root";
const TRUST_EVERY_CA_HELP =
  "import a root whose nameConstraints do not confine URI names to the trust domain, accepting that every CA it has signed or will sign can mint identities this mesh accepts (recorded in ca.json; 'ca status' shows it, 'ca serve' warns at every start)";

export function registerCaCommand(program: Command): void {
  const ca = program.command("ca").description("run the meshward certificate authority").hook("preAction", checkCaDirOption);

  ca.command("init")
    .description("create a CA directory: generate a root (10 years) and an issuer (1 year), or import your organisation's root and issuer with --root-cert, --issuer-cert and --issuer-key")
    .requiredOption("--trust-domain <td>", "trust domain, e.g. prod.example.com")
    .requiredOption("--dir <dir>", "CA directory to create (refuses to overwrite an existing CA)")
    .option("--passphrase-file <file>", "encrypt the key files at rest with this passphrase (or set MESHWARD_CA_PASSPHRASE)")
    .option("--root-cert <file>", "import: your organisation's root certificate (PEM); its nameConstraints must confine URI names to the trust domain (permitted URI:<td>), else it is refused (E_ROOT_UNCONSTRAINED) unless --trust-every-ca-under-root")
    .option("--issuer-cert <file>", "import: an issuer (intermediate) certificate signed by that root, PEM (intermediates may follow)")
    .option("--issuer-key <file>", "import: the issuer's private key (PEM)")
    .option("--issuer-key-passphrase-file <file>", "import: passphrase of --issuer-key, if it is encrypted (the CA encrypts its keys at rest with --passphrase-file)")
    .option(TRUST_EVERY_CA_FLAG, TRUST_EVERY_CA_HELP)
    .option("--root-ttl <duration>", "lifetime of a generated root", "10y")
    .option("--issuer-ttl <duration>", "lifetime of a generated issuer", "1y")
    .addOption(new Option("--key-type <type>", "key algorithm of a generated root and issuer (Dapr >= 1.18 Sentry uses ed25519)").choices([...KEY_ALGORITHMS]).default("ec-p256"))
    .option("--json", "print the result as JSON")
    .action(async (opts: OptionValues) => (await actions()).caInit(opts));

  ca.command("serve")
    .description("serve the CA API (gRPC SignCertificate + HTTPS bundle, CRL, health, metrics) on one TLS port")
    .requiredOption("--dir <dir>", "CA directory made by 'meshward ca init'")
    .option("--config <file>", "YAML configuration (flags override it)")
    .option("--listen <addr>", "HOST:PORT to listen on (port 0 picks a free port) (default: 127.0.0.1:8443)")
    .option("--store <url>", "store: sqlite:/path/ca.db or postgres://… (default: <dir>/ca.db)")
    .option("--status <addr>", "HOST:PORT for the status page, /metrics, /healthz and /readyz over plain HTTP (off by default)")
    .option("--status-token-file <file>", "status page token file (or MESHWARD_STATUS_TOKEN); required when --status is not on loopback")
    .option("--workload-ttl <duration>", "workload certificate lifetime, at least 5s (default: 24h)")
    .option("--clock-skew <duration>", "NotBefore backdating for clock skew (default: 15m)")
    .option("--dns-name <name>", "DNS name in the CA's serving certificate (repeatable) (default: localhost)", collect)
    .option("--serving-spiffe-id <id>", "SPIFFE ID in the CA's serving certificate (Dapr sidecars expect spiffe://<control-plane td>/ns/<control-plane ns>/dapr-sentry) (default: spiffe://<td>/ns/meshward-system/meshward-ca)")
    .addOption(validatorOption("--default-validator <name>", "validator for requests that name none", ["join-token", "jwks", "insecure"]))
    .option("--jwks-file <file>", "enable the JWT validator with this JWKS file")
    .option("--jwks-url <url>", "enable the JWT validator with this JWKS URL")
    .option("--jwt-issuer <iss>", "required JWT issuer")
    .option("--jwt-audience <aud>", "accepted JWT audience (repeatable) (default: the serving SPIFFE ID, and dapr.io/sentry for Kubernetes tokens)", collect)
    .addOption(new Option("--jwt-mapping <mapping>", "how a JWT becomes an identity: kubernetes (service-account tokens) or sentry (sub is the SPIFFE ID, as Dapr Sentry's JWKS validator)").choices(["kubernetes", "sentry"]))
    .option("--allow-insecure-dev", "enable the insecure validator (no proof of identity; development only)")
    .option("--passphrase-file <file>", "passphrase of encrypted key files (or MESHWARD_CA_PASSPHRASE)")
    .option("--handshake-timeout <duration>", "close an API connection that has not completed its TLS handshake in this long (default: 10s)")
    .option("--max-connections <n>", "API connections open at once, from all callers; more are closed on accept (default: 4096)")
    .option("--max-connections-per-address <n>", "API connections open at once from one source IP address; more are closed on accept (default: 256)")
    .option("--status-max-connections <n>", "status-port connections open at once, from everyone; more are reset on accept (default: 64)")
    .option("--status-max-connections-per-address <n>", "status-port connections open at once from one source IP address (default: 16)")
    .option("--dapr-trust-bundle-namespace <ns>", "in a cluster: keep Dapr's dapr-trust-bundle ConfigMap in this namespace (Dapr's control plane, e.g. dapr-system) equal to the CA's trust bundle through the Kubernetes API, at start and at every root rotation step (needs the RBAC of deploy/kubernetes/components/dapr-trust-bundle; off by default)")
    .addOption(logFormatOption())
    .addOption(logLevelOption())
    .action(async (opts: OptionValues) => (await serveAction()).caServe(opts));

  ca.command("migrate-store")
    .description("move a CA's records (certificates, revocations, tokens, CRL number; from PostgreSQL also the replicas' shared CA state and published CRL) to another store, e.g. SQLite to PostgreSQL for several replicas; stop the CA first")
    .requiredOption("--dir <dir>", "CA directory")
    .option("--from <url>", "the store to read (default: sqlite:<dir>/ca.db)")
    .requiredOption("--to <url>", "the empty store to fill, e.g. postgres://meshward@db:5432/meshward")
    .action(async (opts: OptionValues) => (await actions()).caMigrateStore(opts));

  ca.command("rotate-issuer")
    .description("self-managed CAs: replace the issuer with a new one signed by the root (a running CA switches within a second)")
    .requiredOption("--dir <dir>", "CA directory")
    .option("--now", "rotate even though the issuer is not near its rotation threshold, and retire the old issuer at once (after a key leak): its CRL is no longer published, so its workloads renew within a bundle refresh")
    .option("--issuer-ttl <duration>", "lifetime of the new issuer", "1y")
    .option("--passphrase-file <file>", "passphrase of encrypted key files (or MESHWARD_CA_PASSPHRASE)")
    .option("--store <url>", "the store of CA replicas (postgres://…): act on the CA state they share (default: the directory)")
    .action(async (opts: OptionValues) => (await actions()).caRotateIssuer(opts));

  ca.command("import-issuer")
    .description("install a new issuer signed by a root in the trust bundle (external roots: your organisation's CA signed it); a running CA switches without a restart")
    .requiredOption("--dir <dir>", "CA directory")
    .requiredOption("--issuer-cert <file>", "the new issuer certificate (PEM; intermediates may follow)")
    .requiredOption("--issuer-key <file>", "its private key (PEM)")
    .option("--issuer-key-passphrase-file <file>", "passphrase of the imported key, if it is encrypted")
    .option("--passphrase-file <file>", "passphrase to encrypt the key at rest (or MESHWARD_CA_PASSPHRASE)")
    .option("--now", "retire the old issuer at once, as rotate-issuer --now (after a key leak): its CRL is no longer published, so its workloads renew within a bundle refresh (default: it keeps signing its CRL until its certificates expire)")
    .option("--store <url>", "the store of CA replicas (postgres://…): act on the CA state they share (default: the directory)")
    .action(async (opts: OptionValues) => (await actions()).caImportIssuer(opts));

  const rotateRoot = ca.command("rotate-root").description("replace the trust anchor without downtime: prepare → activate → retire (see docs/rotation.md)");
  rotateRoot
    .command("prepare")
    .description("step 1: add a new root to the trust bundle (every workload picks it up while running); signing is unchanged")
    .requiredOption("--dir <dir>", "CA directory")
    .option("--root-cert <file>", "external roots: your organisation's new root certificate (instead of generating one); its nameConstraints must confine URI names to the trust domain, else it is refused (E_ROOT_UNCONSTRAINED) unless --trust-every-ca-under-root")
    .option(TRUST_EVERY_CA_FLAG, `with --root-cert: ${TRUST_EVERY_CA_HELP}`)
    .option("--root-ttl <duration>", "lifetime of a generated root", "10y")
    .option("--passphrase-file <file>", "passphrase of encrypted key files (or MESHWARD_CA_PASSPHRASE)")
    .option("--store <url>", "the store of CA replicas (postgres://…): act on the CA state they share (default: the directory)")
    .action(async (opts: OptionValues) => (await actions()).caRotateRootPrepare(opts));
  rotateRoot
    .command("activate")
    .description("step 2: sign with a new issuer under the new root; workloads move to it at their next renewal (or at once with --reissue)")
    .requiredOption("--dir <dir>", "CA directory")
    .option("--reissue", "ask every workload to renew now")
    .option("--issuer-cert <file>", "external roots: an issuer signed by the new root")
    .option("--issuer-key <file>", "external roots: its private key")
    .option("--issuer-ttl <duration>", "lifetime of a generated issuer", "1y")
    .option("--passphrase-file <file>", "passphrase of encrypted key files (or MESHWARD_CA_PASSPHRASE)")
    .option("--store <url>", "the store of CA replicas (postgres://…): act on the CA state they share (default: the directory)")
    .action(async (opts: OptionValues) => (await actions()).caRotateRootActivate(opts));
  rotateRoot
    .command("retire")
    .description("step 3: remove the old root from the bundle; refused while unexpired certificates still chain to it")
    .requiredOption("--dir <dir>", "CA directory")
    .option("--force", "retire even though certificates still chain to the old root (they stop verifying)")
    .option("--store <url>", "store URL (default: <dir>/ca.db)")
    .action(async (opts: OptionValues) => (await actions()).caRotateRootRetire(opts));

  ca.command("dapr-trust-bundle")
    .description("print (or write with --out) Dapr's dapr-trust-bundle ConfigMap from every root in the CA's trust bundle, for daprd sidecars this CA serves as Dapr Sentry: pipe it to 'kubectl apply -f -' after each root rotation step (docs/rotation.md); never holds key material")
    .requiredOption("--dir <dir>", "CA directory")
    .addOption(new Option("--format <format>", "kubernetes: the ConfigMap (with --secret also the Secret) for 'kubectl apply -f -'; pem: the trust anchors alone, for self-hosted daprd (DAPR_TRUST_ANCHORS, DAPR_TRUST_ANCHORS_FILE)").choices(["kubernetes", "pem"]).default("kubernetes"))
    .option("--namespace <ns>", "Dapr's control-plane namespace (default: dapr-system)")
    .option("--secret", "also the dapr-trust-bundle Secret, with ca.crt only (for tools that read the anchors from the Secret; issuer.crt and issuer.key are never written)")
    .option("--out <file>", "write to this file (atomically) instead of standard output")
    .option("--store <url>", "the store of CA replicas (postgres://…): read the CA state they share (default: the directory)")
    .action(async (opts: OptionValues) => (await actions()).caDaprTrustBundle(opts));

  ca.command("status")
    .description("show the trust anchors, time left, rotation state and how many live certificates chain to each root; exit 1 when one expires within --warn")
    .requiredOption("--dir <dir>", "CA directory")
    .option("--warn <duration>", "exit non-zero when the root or issuer expires within this", "30d")
    .option("--store <url>", "store URL (default: <dir>/ca.db)")
    .option("--passphrase-file <file>", "passphrase of encrypted key files (or MESHWARD_CA_PASSPHRASE)")
    .option("--json", "print JSON")
    .action(async (opts: OptionValues) => (await actions()).caStatus(opts));
}
