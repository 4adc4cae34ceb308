// What `meshward cert` does; what it accepts (its flags, its help) is ../cert.ts.
import { prepareOutDir } from "../../identity/local-paths.ts";
import { lockOutDir } from "../out-dir-lock.ts";
import { basename, join } from "node:path";
import type { OptionValues } from "commander";
import { readCaState } from "../../ca/anchors.ts";
import { describeError, isMeshwardError, MeshwardError } from "../../errors.ts";
import { readBundleFile } from "../../identity/bundle-file.ts";
import { requestCertificate, type ValidatorChoice } from "../../identity/ca-client.ts";
import { normalizeSerial } from "../../pki/certificate.ts";
import { createCsr } from "../../pki/csr.ts";
import { inspectCertificate } from "../../pki/inspect.ts";
import { encodePrivateKey, generateKeyPair } from "../../pki/keys.ts";
import { certificatesFromPem } from "../../pki/pem.ts";
import { parseSpiffeId, parseTrustDomain } from "../../spiffe/id.ts";
import { checkIdentityFlags } from "../identity-flags.ts";
import type { IssuanceRecord } from "../../store/store.ts";
import { certificateSecond, describeTimeLeft, formatCertificateTime } from "../../util/duration.ts";
import { flagDuration } from "../duration-flags.ts";
import { flagValue } from "../usage.ts";
import { checkTokenFile, writeFilesTogether } from "../../util/files.ts";
import { VALIDATOR_CHOICES } from "../cert.ts";
import { TOKEN_ON_COMMAND_LINE, readTextFile } from "../options.ts";
import { INPUT_LIMITS } from "../../util/read-input.ts";

/** `meshward cert issue`: a key made here, a certificate for it from the CA. */
export async function certIssue(opts: OptionValues): Promise<void> {
  const token = readToken(opts);
  // Before the CA is contacted: a local mistake must not spend a single-use token.
  const out = prepareOutDir(opts.out);
  const bundlePem = readBundleFile(opts.bundle);
  const trustDomain = opts.trustDomain !== undefined ? flagValue(() => parseTrustDomain(opts.trustDomain)) : trustDomainFromBundle(bundlePem, opts.bundle);
  checkIdentityFlags(opts);
  // One writer at a time: two runs into one directory could leave one's key beside the other's certificate.
  const unlock = lockOutDir(out, `--out ${opts.out}`);
  let signed;
  let keyPem: string;
  let removedLeftovers: readonly string[] = [];
  try {
    const keyPair = generateKeyPair();
    keyPem = encodePrivateKey(keyPair.privateKey);
    const csrPem = await createCsr({ keyPair, dnsNames: opts.dnsName ?? [] });
    signed = await requestCertificate(
      { address: opts.ca, bundlePem, trustDomain, ...(opts.caSpiffeId !== undefined ? { caSpiffeId: parseSpiffeId(opts.caSpiffeId).toString() } : {}) },
      { csrPem, token, validator: VALIDATOR_CHOICES[opts.validator as string] as ValidatorChoice, namespace: opts.namespace, appId: opts.appId },
    );
    // All three written in full before any is renamed; the certificate, which servers check against the key, goes last.
    try {
      removedLeftovers = writeFilesTogether([
        { path: join(out, "bundle.pem"), data: signed.bundlePem },
        { path: join(out, "key.pem"), data: keyPem, mode: 0o600 },
        { path: join(out, "cert.pem"), data: signed.certChainPem },
      ]).removedLeftovers;
    } catch (error) {
      const issued = inspectCertificate(certificatesFromPem(signed.certChainPem)[0] as Buffer);
      throw new MeshwardError(
        "E_FILE_WRITE",
        `${(error as Error).message}. The CA issued ${issued.uris[0]} (serial ${issued.serial}) and the token is used, but its key existed only in this process and is lost, so the certificate cannot be used: revoke it (meshward cert revoke --serial ${issued.serial}), fix the directory, and run cert issue with a new token`,
        { cause: error, details: { serial: issued.serial } },
      );
    }
  } finally {
    unlock();
  }
  const info = inspectCertificate(certificatesFromPem(signed.certChainPem)[0] as Buffer);
  if (removedLeftovers.length > 0) {
    process.stderr.write(`meshward: removed what an interrupted earlier write left in ${opts.out}: ${removedLeftovers.map((path) => basename(path)).join(", ")}\n`);
  }
  if (opts.json) {
    process.stdout.write(`${JSON.stringify({ spiffeId: info.uris[0], serial: info.serial, notAfter: formatCertificateTime(info.notAfter), dir: opts.out }, null, 2)}\n`);
  } else {
    process.stdout.write(`issued ${info.uris[0]} (serial ${info.serial}), valid until ${formatCertificateTime(info.notAfter)} (${describeTimeLeft(info.notAfter, new Date())})\n`);
    process.stdout.write(`wrote ${join(opts.out, "cert.pem")}, ${join(opts.out, "key.pem")} (0600), ${join(opts.out, "bundle.pem")}\n`);
  }
}

/** `meshward cert list`. */
export async function certList(opts: OptionValues): Promise<void> {
  const now = new Date();
  const limit = Number(opts.limit);
  if (!Number.isSafeInteger(limit) || limit < 1) throw new MeshwardError("E_USAGE", `--limit must be a whole number of at least 1, got ${JSON.stringify(opts.limit)}`);
  const root = opts.root === undefined ? undefined : parseRootFingerprint(opts.root);
  // A directory that is no CA is refused, not given an empty store (and "no certificates").
  readCaState(opts.dir);
  const { withCaStore } = await caStore();
  const rows = await withCaStore(opts.dir, opts.store, async (store) => {
    const records = await store.listIssuances({
      ...(opts.spiffeId !== undefined ? { spiffeId: flagValue(() => parseSpiffeId(opts.spiffeId)).toString() } : {}),
      ...(opts.valid || opts.live ? { validAt: now } : {}),
      ...(root !== undefined ? { rootFingerprint: root } : {}),
      // --live filters after reading: read every candidate, then keep --limit of them.
      ...(opts.live ? {} : { limit }),
    });
    const revoked = new Set((await store.listRevocations()).map((r) => r.serial));
    const superseded = await store.supersededBy(records.map((r) => r.serial));
    return records.map((r) => certificateRow(r, now, revoked, superseded));
  });
  const shown = opts.live ? rows.filter((r) => r.status === "valid").slice(0, limit) : rows;
  if (opts.json) {
    process.stdout.write(`${JSON.stringify(shown, null, 2)}\n`);
    return;
  }
  if (shown.length === 0) {
    const filtered = opts.spiffeId !== undefined || root !== undefined || opts.valid || opts.live;
    process.stdout.write(filtered ? "no certificate matches\n" : "no certificates issued yet\n");
    return;
  }
  process.stdout.write(`${"SERIAL".padEnd(34)} ${"STATUS".padEnd(10)} ${"NOT AFTER".padEnd(24)} ${"ROOT".padEnd(11)} ${"VALIDATOR".padEnd(10)} SPIFFE ID\n`);
  for (const row of shown) {
    process.stdout.write(`${row.serial.padEnd(34)} ${row.status.padEnd(10)} ${row.notAfter.padEnd(24)} ${row.rootFingerprint.slice(0, 11).padEnd(11)} ${row.attestation.padEnd(10)} ${row.spiffeId}\n`);
  }
}

/** `meshward cert revoke`: by serial or SPIFFE ID, with every renewal. */
export async function certRevoke(opts: OptionValues): Promise<void> {
  if ((opts.serial === undefined) === (opts.spiffeId === undefined)) {
    throw new MeshwardError("E_USAGE", "give exactly one of --serial or --spiffe-id");
  }
  readCaState(opts.dir);
  const now = new Date();
  const { withCaStore } = await caStore();
  const outcome = await withCaStore(opts.dir, opts.store, async (store) => {
    let serials: string[];
    if (opts.serial !== undefined) {
      const serial = normalizeSerial(opts.serial);
      if ((await store.getIssuance(serial)) === undefined) {
        // The CA's own serving certificates are made in memory and recorded nowhere, so an unknown
        // serial may be one of them: say how that case is handled instead.
        throw new MeshwardError(
          "E_CERT_UNKNOWN",
          `no certificate with serial ${serial} was issued by this CA; check 'meshward cert list --dir ${opts.dir}'. A CA's own serving certificate is not revocable this way: if its key may have leaked, run 'meshward ca rotate-issuer --now' (external root: 'ca import-issuer --now'; see docs/rotation.md, "Issuer rotation")`,
        );
      }
      serials = [serial];
    } else {
      const id = parseSpiffeId(opts.spiffeId).toString();
      serials = (await store.listIssuances({ spiffeId: id, validAt: now })).map((r) => r.serial);
      if (serials.length === 0) throw new MeshwardError("E_CERT_UNKNOWN", `no unexpired certificate of ${id} to revoke`);
    }
    // Each with everything renewed from it: a thief who renewed a stolen certificate loses those too.
    const revoked = new Set<string>();
    for (const serial of serials) for (const done of await store.revokeLineage({ serial, revokedAt: now, reason: opts.reason })) revoked.add(done);
    return { serials, revoked };
  });
  const named = outcome.serials.filter((serial) => outcome.revoked.has(serial));
  const renewals = [...outcome.revoked].filter((serial) => !outcome.serials.includes(serial));
  const already = outcome.serials.length - named.length;
  process.stdout.write(
    `revoked ${named.length} certificate${named.length === 1 ? "" : "s"}${already > 0 ? ` (${already} already revoked)` : ""}: ${outcome.serials.join(", ")}\n` +
      (renewals.length > 0 ? `also revoked ${renewals.length} certificate${renewals.length === 1 ? "" : "s"} renewed from ${outcome.serials.length === 1 ? "it" : "them"}: ${renewals.join(", ")}\n` : ""),
  );
}

/** `meshward cert inspect`. */
export function certInspect(file: string, opts: OptionValues): void {
  const text = readTextFile(file, "certificate");
  let certificates: Buffer[];
  try {
    certificates = certificatesFromPem(text);
  } catch (error) {
    // Name the file, and what it holds when it holds something else (a key given by mistake).
    const labels = [...new Set([...text.matchAll(/-----BEGIN ([A-Z0-9 ]+)-----/g)].map((m) => m[1]))];
    const holds = labels.length === 0 ? "" : ` (the file holds ${labels.join(", ")} and no CERTIFICATE: is it the key, or another file?)`;
    throw new MeshwardError(isMeshwardError(error) ? error.code : "E_PEM_INVALID", `${file}: ${isMeshwardError(error) ? error.message : describeError(error)}${holds}`, { cause: error });
  }
  const [der, ...rest] = certificates;
  const info = inspectCertificate(der as Buffer);
  const now = new Date();
  const leftMs = info.notAfter.getTime() - now.getTime();
  const warnMs = opts.warn !== undefined ? flagDuration(opts.warn, "--warn") : undefined;
  const result = {
    spiffeId: info.uris[0] ?? null,
    uris: info.uris,
    dnsNames: info.dnsNames,
    subject: info.subject,
    issuer: info.issuer,
    serial: info.serial,
    isCa: info.isCa,
    notBefore: formatCertificateTime(info.notBefore),
    notAfter: formatCertificateTime(info.notAfter),
    timeLeft: describeTimeLeft(info.notAfter, now),
    expired: leftMs <= 0,
    chainLength: 1 + rest.length,
    fingerprint256: info.fingerprint256,
  };
  if (opts.json) process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
  else {
    const lines = [
      `SPIFFE ID   ${result.spiffeId ?? "(none)"}`,
      ...(info.dnsNames.length > 0 ? [`DNS names   ${info.dnsNames.join(", ")}`] : []),
      `issuer      ${info.issuer.replace(/\n/g, ", ") || "(empty)"}`,
      `serial      ${info.serial}`,
      `valid       ${result.notBefore} → ${result.notAfter}`,
      `time left   ${result.timeLeft}`,
      `kind        ${info.isCa ? "CA certificate" : "workload (leaf) certificate"}${rest.length > 0 ? `, followed by ${rest.length} chain certificate${rest.length === 1 ? "" : "s"}` : ""}`,
    ];
    process.stdout.write(`${lines.join("\n")}\n`);
  }
  // Exit 1 says why on stderr (stdout stays the report a script reads).
  if (leftMs <= 0) {
    process.stderr.write(`meshward: ${file} expired at ${result.notAfter}\n`);
    process.exitCode = 1;
  } else if (warnMs !== undefined && leftMs < warnMs) {
    process.stderr.write(`meshward: ${file} expires within --warn ${opts.warn}: ${result.timeLeft} (at ${result.notAfter})\n`);
    process.exitCode = 1;
  }
}

/**
 * One issued certificate as `cert list` shows it. Status, first match wins: revoked, expired,
 * superseded (a renewal proven with it replaced it: it no longer counts as live), valid (live).
 */
function certificateRow(record: IssuanceRecord, now: Date, revoked: ReadonlySet<string>, superseded: ReadonlyMap<string, string>) {
  const supersededBy = superseded.get(record.serial);
  const status = revoked.has(record.serial) ? "revoked" : certificateSecond(record.notAfter) <= now.getTime() ? "expired" : supersededBy !== undefined ? "superseded" : "valid";
  return {
    serial: record.serial,
    spiffeId: record.spiffeId,
    status,
    notAfter: formatCertificateTime(record.notAfter),
    issuedAt: record.issuedAt.toISOString(),
    attestation: record.attestation,
    rootFingerprint: record.rootFingerprint,
    ...(supersededBy !== undefined ? { supersededBy } : {}),
  };
}

/** A root's SHA-256 fingerprint in node's colon form, from what a person pastes (any case, colons optional). */
export function parseRootFingerprint(input: string): string {
  const hex = input.trim().replace(/[\s:]/g, "").toUpperCase();
  if (!/^[0-9A-F]{64}$/.test(hex)) {
    throw new MeshwardError("E_USAGE", `--root ${JSON.stringify(input.slice(0, 100))} is not a SHA-256 fingerprint (64 hex digits, colons optional, as 'meshward ca status' prints it)`);
  }
  return hex.match(/../g)!.join(":");
}

function readToken(opts: { token?: string; tokenFile?: string }): string {
  if (opts.token !== undefined && opts.tokenFile !== undefined) throw new MeshwardError("E_USAGE", "give --token or --token-file, not both");
  if (opts.token !== undefined) process.stderr.write(`meshward: warning: ${TOKEN_ON_COMMAND_LINE}\n`);
  if (opts.tokenFile !== undefined) checkTokenFile(opts.tokenFile, (message) => process.stderr.write(`meshward: warning: ${message}\n`));
  const token = opts.token ?? (opts.tokenFile !== undefined ? readTextFile(opts.tokenFile, "token file", INPUT_LIMITS.secret).trim() : process.env.MESHWARD_TOKEN);
  if (token === undefined || token === "") throw new MeshwardError("E_USAGE", "a token is needed: --token, --token-file or MESHWARD_TOKEN");
  return token;
}

function trustDomainFromBundle(bundlePem: string, file: string): string {
  for (const der of certificatesFromPem(bundlePem)) {
    const uri = inspectCertificate(der).uris.find((u) => u.startsWith("spiffe://"));
    if (uri !== undefined) return parseSpiffeId(uri).trustDomain;
  }
  throw new MeshwardError("E_USAGE", `no root in ${file} names a SPIFFE trust domain; give --trust-domain`);
}

/** The CA's store (SQLite, better-sqlite3), for `cert list` and `cert revoke`: `cert issue` and `cert inspect` do not load it. */
function caStore(): Promise<typeof import("../store.ts")> {
  return import("../store.ts");
}
