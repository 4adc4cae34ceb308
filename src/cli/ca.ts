import { Command, Option } from "commander";
import { X509Certificate } from "node:crypto";
import { readFileSync } from "node:fs";
import { parse as parseYaml } from "yaml";
import { caConfigSchema, type CaConfig } from "../config/ca.ts";
import { loadYamlConfig } from "../config/load.ts";
import { caLayout, initAnchors, loadAnchors } from "../ca/anchors.ts";
import { startCaServer } from "../ca/server.ts";
import { MeshwardError } from "../errors.ts";
import { describeTimeLeft, parseDuration } from "../util/duration.ts";
import { cliLogger, collect, logFormatOption, logLevelOption, readPassphrase, readTextFile, untilSignal } from "./options.ts";

export function registerCaCommand(program: Command): void {
  const ca = program.command("ca").description("run the meshward certificate authority");

  ca.command("init")
    .description("create a CA directory: a root (10 years) and an issuer (1 year), or import your organisation's")
    .requiredOption("--trust-domain <td>", "trust domain, e.g. prod.example.com")
    .requiredOption("--dir <dir>", "CA directory to create (refuses to overwrite an existing CA)")
    .option("--passphrase-file <file>", "encrypt the key files at rest with this passphrase (or set MESHWARD_CA_PASSPHRASE)")
    .option("--root-cert <file>", "import: your organisation's root certificate (PEM)")
    .option("--issuer-cert <file>", "import: an issuer (intermediate) certificate signed by that root, PEM (intermediates may follow)")
    .option("--issuer-key <file>", "import: the issuer's private key (PEM)")
    .option("--root-ttl <duration>", "lifetime of a generated root", "10y")
    .option("--issuer-ttl <duration>", "lifetime of a generated issuer", "1y")
    .option("--json", "print the result as JSON")
    .action(async (opts) => {
      const importing = [opts.rootCert, opts.issuerCert, opts.issuerKey].filter((v) => v !== undefined).length;
      if (importing !== 0 && importing !== 3) {
        throw new MeshwardError("E_USAGE", "to import an existing CA give all three of --root-cert, --issuer-cert and --issuer-key");
      }
      const passphrase = readPassphrase(opts.passphraseFile);
      const state = await initAnchors({
        dir: opts.dir,
        trustDomain: opts.trustDomain,
        now: new Date(),
        rootTtlMs: parseDuration(opts.rootTtl, "--root-ttl"),
        issuerTtlMs: parseDuration(opts.issuerTtl, "--issuer-ttl"),
        ...(passphrase !== undefined ? { passphrase } : {}),
        ...(importing === 3
          ? {
              imported: {
                rootCertPem: readTextFile(opts.rootCert, "root certificate"),
                issuerCertPem: readTextFile(opts.issuerCert, "issuer certificate"),
                issuerKeyPem: readTextFile(opts.issuerKey, "issuer key"),
              },
            }
          : {}),
      });
      const layout = caLayout(opts.dir);
      const root = new X509Certificate(readFileSync(layout.rootCert));
      const issuer = new X509Certificate(readFileSync(layout.issuerCert));
      const summary = {
        trustDomain: state.trustDomain,
        mode: state.mode,
        dir: opts.dir,
        encrypted: passphrase !== undefined,
        root: { fingerprint256: root.fingerprint256, notAfter: new Date(root.validTo).toISOString() },
        issuer: { fingerprint256: issuer.fingerprint256, notAfter: new Date(issuer.validTo).toISOString() },
        bundle: layout.bundle,
      };
      if (opts.json) {
        process.stdout.write(`${JSON.stringify(summary, null, 2)}\n`);
        return;
      }
      const now = new Date();
      process.stdout.write(
        [
          `Created a meshward CA for trust domain ${state.trustDomain} in ${opts.dir} (${state.mode === "self-managed" ? "self-managed root" : "imported root"}${summary.encrypted ? ", keys encrypted" : ""}).`,
          `  root    ${root.fingerprint256}  expires ${summary.root.notAfter} (${describeTimeLeft(new Date(root.validTo), now)})`,
          `  issuer  ${issuer.fingerprint256}  expires ${summary.issuer.notAfter} (${describeTimeLeft(new Date(issuer.validTo), now)})`,
          `  trust bundle for workloads: ${layout.bundle}`,
          `Next: meshward ca serve --dir ${opts.dir} --listen 127.0.0.1:8443`,
          "",
        ].join("\n"),
      );
    });

  ca.command("serve")
    .description("serve the CA API (gRPC SignCertificate + HTTPS bundle, CRL, health, metrics) on one TLS port")
    .requiredOption("--dir <dir>", "CA directory made by 'meshward ca init'")
    .option("--config <file>", "YAML configuration (flags override it)")
    .option("--listen <addr>", "HOST:PORT to listen on (port 0 picks a free port) [default: 127.0.0.1:8443]")
    .option("--store <url>", "store: sqlite:/path/ca.db or postgres://… [default: <dir>/ca.db]")
    .option("--workload-ttl <duration>", "workload certificate lifetime [default: 24h]")
    .option("--clock-skew <duration>", "NotBefore backdating for clock skew [default: 15m]")
    .option("--dns-name <name>", "DNS name in the CA's serving certificate (repeatable) [default: localhost]", collect)
    .addOption(new Option("--default-validator <name>", "validator for requests that name none").choices(["join-token", "jwks", "insecure"]))
    .option("--jwks-file <file>", "enable the JWT validator with this JWKS file")
    .option("--jwks-url <url>", "enable the JWT validator with this JWKS URL")
    .option("--jwt-issuer <iss>", "required JWT issuer")
    .option("--jwt-audience <aud>", "required JWT audience")
    .option("--allow-insecure-dev", "enable the insecure validator (no proof of identity; development only)")
    .option("--passphrase-file <file>", "passphrase of encrypted key files (or MESHWARD_CA_PASSPHRASE)")
    .addOption(logFormatOption())
    .addOption(logLevelOption())
    .action(async (opts) => {
      const config = resolveCaConfig(opts);
      const logger = cliLogger("ca", opts);
      const passphrase = readPassphrase(opts.passphraseFile);
      const server = await startCaServer({ dir: opts.dir, config, logger, ...(passphrase !== undefined ? { passphrase } : {}) });
      process.stdout.write(`meshward CA listening on ${server.address} as ${server.spiffeId}\n`);
      const signal = await untilSignal();
      logger.info({ event: "ca-stopping", signal }, "stopping");
      await server.close();
    });

  ca.command("status")
    .description("show the trust anchors and their time left; exit 1 when one has less than --warn left")
    .requiredOption("--dir <dir>", "CA directory")
    .option("--warn <duration>", "exit non-zero when the root or issuer expires within this", "30d")
    .option("--passphrase-file <file>", "passphrase of encrypted key files (or MESHWARD_CA_PASSPHRASE)")
    .option("--json", "print JSON")
    .action((opts) => {
      const anchors = loadAnchors({ dir: opts.dir, ...withPassphrase(readPassphrase(opts.passphraseFile)) });
      const now = new Date();
      const warnMs = parseDuration(opts.warn, "--warn");
      const entries = [
        ...anchors.roots.map((r) => ({ kind: "root", cert: r })),
        { kind: "issuer", cert: anchors.issuer.certificate },
      ].map(({ kind, cert }) => {
        const notAfter = new Date(cert.validTo);
        return { kind, subject: cert.subject.replace(/\n/g, ", "), fingerprint256: cert.fingerprint256, notAfter: notAfter.toISOString(), timeLeft: describeTimeLeft(notAfter, now), expiringSoon: notAfter.getTime() - now.getTime() < warnMs };
      });
      if (opts.json) process.stdout.write(`${JSON.stringify({ trustDomain: anchors.trustDomain, mode: anchors.mode, anchors: entries }, null, 2)}\n`);
      else {
        process.stdout.write(`trust domain ${anchors.trustDomain} (${anchors.mode})\n`);
        for (const e of entries) process.stdout.write(`  ${e.kind.padEnd(7)} expires ${e.notAfter}  ${e.timeLeft}${e.expiringSoon ? "  ← WITHIN --warn " + opts.warn : ""}\n`);
      }
      if (entries.some((e) => e.expiringSoon)) process.exitCode = 1;
    });
}

function withPassphrase(passphrase: string | undefined): { passphrase?: string } {
  return passphrase === undefined ? {} : { passphrase };
}

/** Config file, then flags on top; both validated by the same zod schema. */
function resolveCaConfig(opts: Record<string, unknown>): CaConfig {
  const flags: Record<string, unknown> = {
    listen: opts.listen,
    store: opts.store,
    workloadTtl: opts.workloadTtl,
    clockSkew: opts.clockSkew,
    dnsNames: opts.dnsName,
    defaultValidator: opts.defaultValidator,
    allowInsecureDev: opts.allowInsecureDev === true ? true : undefined,
  };
  if (opts.jwksFile !== undefined || opts.jwksUrl !== undefined) {
    flags.jwks = { jwksFile: opts.jwksFile, jwksUrl: opts.jwksUrl, issuer: opts.jwtIssuer, audience: opts.jwtAudience };
  }
  let fileValues: Record<string, unknown> = {};
  if (typeof opts.config === "string") {
    // Validate the file alone first so its errors carry file:line:column.
    loadYamlConfig(opts.config, caConfigSchema);
    fileValues = (parseYaml(readTextFile(opts.config, "config file")) ?? {}) as Record<string, unknown>;
  }
  const merged = { ...fileValues, ...dropUndefined(flags) };
  const parsed = caConfigSchema.safeParse(merged);
  if (!parsed.success) {
    throw new MeshwardError("E_CONFIG_INVALID", parsed.error.issues.map((i) => `${i.path.join(".") || "config"}: ${i.message}`).join("\n"));
  }
  return parsed.data;
}

function dropUndefined(values: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(
    Object.entries(values)
      .filter(([, v]) => v !== undefined)
      .map(([k, v]) => [k, v !== null && typeof v === "object" && !Array.isArray(v) ? dropUndefined(v as Record<string, unknown>) : v]),
  );
}
