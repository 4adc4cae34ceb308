// What `meshward ca` does; what it accepts (its flags, its help) is ../ca.ts. `ca serve`, the
// one long-running subcommand, is ./ca-serve.ts: the others load no server, logger, metrics,
// HTTP client or config schema (test/cli/lazy-commands.test.ts).
import type { OptionValues } from "commander";
import { X509Certificate } from "node:crypto";
import { readFileSync } from "node:fs";
import { caKeysEncrypted, caLayout, initAnchors, loadAnchors, readCaCertificates, readCaState } from "../../ca/anchors.ts";
import type { AnchorFiles } from "../../ca/anchor-files.ts";
import { activateRoot, importIssuer, issuerRotationStage, prepareRoot, retireRoot, rotateIssuer, type ResumedPrepare } from "../../ca/rotation.ts";
import { howTrusted, rootScopeGap, rootsTrustingEveryCa, TRUST_EVERY_CA_FLAG } from "../../ca/root-scope.ts";
import { withCaFiles, withCaStore } from "../store.ts";
import type { Store } from "../../store/store.ts";
import { trustBundleVersion } from "../../telemetry/bundle-version.ts";
import { copyStore } from "../../store/migrate-store.ts";
import { redactConnectionString } from "../../store/redact.ts";
import { isMeshwardError, MeshwardError } from "../../errors.ts";
import { parseTrustDomain } from "../../spiffe/id.ts";
import { decodePrivateKey } from "../../pki/keys.ts";
import { certificatesFromPem } from "../../pki/pem.ts";
import { describeTimeLeft, formatCertificateTime } from "../../util/duration.ts";
import { flagDuration } from "../duration-flags.ts";
import { flagValue } from "../usage.ts";
import { assertPrivateFile, writeFileAtomic } from "../../util/files.ts";
import { readPassphrase, readTextFile } from "../options.ts";
import { INPUT_LIMITS } from "../../util/read-input.ts";

/** `meshward ca init`: a new CA directory, generated or imported. */
export async function caInit(opts: OptionValues): Promise<void> {
  const importing = [opts.rootCert, opts.issuerCert, opts.issuerKey].filter((v) => v !== undefined).length;
  if (importing !== 0 && importing !== 3) {
    throw new MeshwardError("E_USAGE", "to import an existing CA give all three of --root-cert, --issuer-cert and --issuer-key");
  }
  if (importing === 0 && opts.issuerKeyPassphraseFile !== undefined) throw new MeshwardError("E_USAGE", "--issuer-key-passphrase-file goes with an imported --issuer-key");
  if (importing === 0 && opts.trustEveryCaUnderRoot === true) throw new MeshwardError("E_USAGE", `${TRUST_EVERY_CA_FLAG} goes with an imported --root-cert (a generated root has no other CA under it)`);
  const passphrase = readPassphrase(opts.passphraseFile);
  const issuerKeyPassphrase = readIssuerKeyPassphrase(opts.issuerKeyPassphraseFile);
  const trustDomain = flagValue(() => parseTrustDomain(opts.trustDomain));
  const state = await initAnchors({
    dir: opts.dir,
    trustDomain,
    now: new Date(),
    rootTtlMs: anchorTtl(opts.rootTtl, "--root-ttl"),
    issuerTtlMs: anchorTtl(opts.issuerTtl, "--issuer-ttl"),
    keyAlgorithm: opts.keyType,
    trustEveryCaUnderRoot: opts.trustEveryCaUnderRoot === true,
    ...(passphrase !== undefined ? { passphrase } : {}),
    ...(importing === 3
      ? {
          imported: {
            rootCertPem: readCertificateFile(opts.rootCert, "--root-cert"),
            issuerCertPem: readCertificateFile(opts.issuerCert, "--issuer-cert"),
            issuerKeyPem: readKeyFile(opts.issuerKey, "--issuer-key", issuerKeyPassphrase, "give its passphrase with --issuer-key-passphrase-file FILE"),
            ...(issuerKeyPassphrase !== undefined ? { issuerKeyPassphrase } : {}),
          },
        }
      : {}),
  });
  const layout = caLayout(opts.dir);
  if (issuerKeyPassphrase !== undefined && passphrase === undefined) {
    process.stderr.write(`meshward: note: the imported issuer key was encrypted; ${layout.issuerKey} holds it decrypted (mode 0600). To keep it encrypted at rest, give --passphrase-file (or MESHWARD_CA_PASSPHRASE) to 'ca init'.\n`);
  }
  const root = new X509Certificate(readFileSync(layout.rootCert));
  const issuer = new X509Certificate(readFileSync(layout.issuerCert));
  if (opts.trustEveryCaUnderRoot === true) process.stderr.write(trustEveryCaNote(state.trustEveryCaUnderRoot !== undefined, root, state.trustDomain));
  const summary = {
    trustDomain: state.trustDomain,
    mode: state.mode,
    dir: opts.dir,
    encrypted: passphrase !== undefined,
    trustEveryCaUnderRoot: state.trustEveryCaUnderRoot !== undefined,
    root: { fingerprint256: root.fingerprint256, notAfter: formatCertificateTime(new Date(root.validTo)) },
    issuer: { fingerprint256: issuer.fingerprint256, notAfter: formatCertificateTime(new Date(issuer.validTo)) },
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
}

/** `meshward ca migrate-store`. */
export async function caMigrateStore(opts: OptionValues): Promise<void> {
  readCaState(opts.dir);
  const from = opts.from ?? `sqlite:${caLayout(opts.dir).database}`;
  const report = await withCaStore(opts.dir, from, (source) => withCaStore(opts.dir, opts.to, (target) => copyStore(source, target), { create: true }));
  process.stdout.write(
    `moved ${report.issuances} certificate${report.issuances === 1 ? "" : "s"}, ${report.revocations} revocation${report.revocations === 1 ? "" : "s"} and ${report.tokens} join token${report.tokens === 1 ? "" : "s"}${report.caStateFiles > 0 ? `, ${report.caStateFiles} shared CA state file${report.caStateFiles === 1 ? "" : "s"}` : ""}${report.publishedCrl !== undefined ? ` and CRL #${report.publishedCrl}` : ""} to ${redactConnectionString(opts.to)}; the next CRL number is above ${report.crlNumber}.\n` +
      `Next: give every replica a copy of ${opts.dir} and run: meshward ca serve --dir DIR --store URL --passphrase-file FILE\n`,
  );
}

/** `meshward ca rotate-issuer`. */
export async function caRotateIssuer(opts: OptionValues): Promise<void> {
  const now = new Date();
  const issuerTtlMs = anchorTtl(opts.issuerTtl, "--issuer-ttl");
  const passphrase = readPassphrase(opts.passphraseFile);
  let note: string | undefined;
  const issuer = await withCaFiles(opts.dir, opts.store, async (files) => {
    let current;
    try {
      current = loadAnchors({ dir: opts.dir, files, ...withPassphrase(passphrase) });
    } catch (error) {
      // A key that does not belong to its certificate (a damaged or hand-edited directory): a new
      // issuer needs only the root, so --now repairs it.
      if (!(opts.now && isMeshwardError(error, "E_CA_CORRUPT") && error.details?.key !== undefined)) throw error;
      process.stderr.write(`meshward: ${error.message.split(":")[0]}; replacing the issuer\n`);
    }
    const stage = current === undefined ? "activate" : issuerRotationStage(current.issuer.certificate, now);
    if (current !== undefined && stage === "current" && !opts.now) {
      process.stdout.write(`the issuer has ${describeTimeLeft(new Date(current.issuer.certificate.validTo), now)}, above the rotation threshold; nothing to do (use --now to rotate anyway)\n`);
      return undefined;
    }
    note = encryptionNote(opts.dir, files, passphrase);
    // --now is the answer to a leaked issuer key: the old issuer's CRL is no longer published, so
    // its workloads renew within a bundle refresh (docs/rotation.md). A rotation the thresholds
    // call for keeps it signing its CRL until its certificates expire.
    // With --now the issuer being replaced is recorded as retired in the same step (rotation.ts
    // installIssuer): the CRL of the root that signed it lists it as revoked (cACompromise) until it expires.
    return await rotateIssuer({ dir: opts.dir, now, files, issuerTtlMs, keepPrevious: opts.now !== true, ...withPassphrase(passphrase) });
  });
  if (issuer === undefined) return;
  if (note !== undefined) process.stderr.write(note);
  process.stdout.write(
    `new issuer ${issuer.fingerprint256}, valid until ${formatCertificateTime(new Date(issuer.validTo))}; a running CA signs with it within a second; ` +
      (opts.now === true
        ? "the old issuer's CRL is no longer published: every workload on it renews within a bundle refresh\n"
        : "workloads move to it at their scheduled renewal (the old issuer keeps signing its CRL until its certificates expire)\n"),
  );
}

/** `meshward ca import-issuer`. */
export async function caImportIssuer(opts: OptionValues): Promise<void> {
  const passphrase = readPassphrase(opts.passphraseFile);
  const issuerKeyPassphrase = readIssuerKeyPassphrase(opts.issuerKeyPassphraseFile);
  const issuerCertPem = readCertificateFile(opts.issuerCert, "--issuer-cert");
  const issuerKeyPem = readKeyFile(opts.issuerKey, "--issuer-key", issuerKeyPassphrase ?? passphrase, "give its passphrase with --issuer-key-passphrase-file FILE");
  let note: string | undefined;
  const issuer = await withCaFiles(opts.dir, opts.store, async (files) => {
    note = encryptionNote(opts.dir, files, passphrase);
    const now = new Date();
    return importIssuer({
      dir: opts.dir,
      files,
      issuerCertPem,
      issuerKeyPem,
      now,
      // --now as in rotate-issuer: the replaced issuer is retired at once (a leaked key), its CRL no
      // longer published, so its workloads renew within a bundle refresh (docs/rotation.md), and it
      // is recorded as retired with the new pair: listed as revoked in the CRL of its root when this
      // CA holds that root's key (root-crl.ts).
      keepPrevious: opts.now !== true,
      ...withPassphrase(passphrase),
      ...(issuerKeyPassphrase !== undefined ? { issuerKeyPassphrase } : {}),
    });
  });
  if (note !== undefined) process.stderr.write(note);
  process.stdout.write(
    `installed issuer ${issuer.fingerprint256}, valid until ${formatCertificateTime(new Date(issuer.validTo))}; a running CA signs with it within a second; ` +
      (opts.now === true
        ? "the old issuer's CRL is no longer published: every workload on it renews within a bundle refresh\n"
        : "workloads move to it at their scheduled renewal (the old issuer keeps signing its CRL until its certificates expire)\n"),
  );
}

/** `meshward ca rotate-root prepare`. */
export async function caRotateRootPrepare(opts: OptionValues): Promise<void> {
  const rootTtlMs = anchorTtl(opts.rootTtl, "--root-ttl");
  const passphrase = readPassphrase(opts.passphraseFile);
  if (opts.rootCert === undefined && opts.trustEveryCaUnderRoot === true) throw new MeshwardError("E_USAGE", `${TRUST_EVERY_CA_FLAG} goes with --root-cert (a generated root has no other CA under it)`);
  const importedRootPem = opts.rootCert !== undefined ? readCertificateFile(opts.rootCert, "--root-cert") : undefined;
  let note: string | undefined;
  let trustDomain = "";
  let resumed: ResumedPrepare | undefined;
  const root = await withCaFiles(opts.dir, opts.store, async (files) => {
    resumed = undefined;
    trustDomain = readCaState(opts.dir, files).trustDomain;
    // An imported root comes without a key: nothing is encrypted.
    if (importedRootPem === undefined) note = encryptionNote(opts.dir, files, passphrase);
    return prepareRoot({
      dir: opts.dir,
      files,
      now: new Date(),
      rootTtlMs,
      trustEveryCaUnderRoot: opts.trustEveryCaUnderRoot === true,
      onResume: (found) => (resumed = found),
      ...withPassphrase(passphrase),
      ...(importedRootPem !== undefined ? { importedRootPem } : {}),
    });
  });
  if (note !== undefined) process.stderr.write(note);
  if (resumed !== undefined) process.stderr.write(`meshward: ${resumedPrepareNote(resumed, root)}\n`);
  if (opts.trustEveryCaUnderRoot === true) process.stderr.write(trustEveryCaNote(rootScopeGap(root, trustDomain) !== undefined, root, trustDomain));
  process.stdout.write(
    `prepared root ${root.fingerprint256} (valid until ${formatCertificateTime(new Date(root.validTo))})${resumed !== undefined ? ", finishing an interrupted prepare" : ""}; the bundle now holds it beside the current root.\n` +
      `Next, once every workload has fetched the new bundle (they refresh it every minute): meshward ca rotate-root activate --dir ${opts.dir}\n`,
  );
}

/** What `rotate-root prepare` says when it finishes an interrupted prepare instead of starting one. */
export function resumedPrepareNote(resumed: ResumedPrepare, root: X509Certificate): string {
  const what = resumed.rootKept
    ? `kept its root ${root.fingerprint256} and its key (root.next.pem, root.next.key)`
    : resumed.keyKept
      ? "kept its key (root.next.key) and made the new root with it"
      : "its key was gone, so a new root was generated";
  const dropped = resumed.rootDropped !== undefined ? `; its root ${resumed.rootDropped}, whose key is gone, left the bundle` : "";
  const how = resumed.recorded ? "the key matches the one ca.json records" : "ca.json records no key (an older meshward wrote it) and the bundle already held that root";
  return `resumed an interrupted 'rotate-root prepare' (${how}): ${what}${dropped}`;
}

/** `meshward ca rotate-root activate`. */
export async function caRotateRootActivate(opts: OptionValues): Promise<void> {
  if ((opts.issuerCert === undefined) !== (opts.issuerKey === undefined)) throw new MeshwardError("E_USAGE", "give both --issuer-cert and --issuer-key, or neither");
  const issuerTtlMs = anchorTtl(opts.issuerTtl, "--issuer-ttl");
  const passphrase = readPassphrase(opts.passphraseFile);
  const importedIssuer =
    opts.issuerCert !== undefined
      ? { certPem: readCertificateFile(opts.issuerCert, "--issuer-cert"), keyPem: readKeyFile(opts.issuerKey, "--issuer-key", passphrase, "it is decrypted with the CA passphrase: give it with --passphrase-file FILE (or MESHWARD_CA_PASSPHRASE)") }
      : undefined;
  let note: string | undefined;
  const issuer = await withCaFiles(opts.dir, opts.store, async (files) => {
    note = encryptionNote(opts.dir, files, passphrase);
    return activateRoot({
      dir: opts.dir,
      files,
      now: new Date(),
      reissue: opts.reissue === true,
      issuerTtlMs,
      ...withPassphrase(passphrase),
      ...(importedIssuer !== undefined ? { importedIssuer } : {}),
    });
  });
  if (note !== undefined) process.stderr.write(note);
  process.stdout.write(
    `activated: signing with issuer ${issuer.fingerprint256} under the new root${opts.reissue ? "; workloads renew now" : "; workloads move at their next renewal"}.\n` +
      `Next, when no certificate chains to the old root (see 'meshward ca status'): meshward ca rotate-root retire --dir ${opts.dir}\n`,
  );
}

/** `meshward ca rotate-root retire`. */
export async function caRotateRootRetire(opts: OptionValues): Promise<void> {
  // Before the store is opened: a directory that is no CA gets no ca.db made in it.
  readCaState(opts.dir);
  const result = await withCaFiles(opts.dir, opts.store ?? `sqlite:${caLayout(opts.dir).database}`, (files, store) => retireRoot({ dir: opts.dir, store: store!, files, now: new Date(), force: opts.force === true }));
  process.stdout.write(`retired root ${result.retiredFingerprint}${result.remaining > 0 ? ` (forced: ${result.remaining} certificates still chained to it)` : ""}; the rotation is complete\n`);
}

/** `meshward ca status`. */
export async function caStatus(opts: OptionValues): Promise<void> {
  const now = new Date();
  const warnMs = flagDuration(opts.warn, "--warn");
  // Before the store is opened: a directory that is no CA gets no ca.db made in it.
  readCaState(opts.dir);
  const { anchors, unrecordedNext, countsByRoot } = await withCaFiles(
    opts.dir,
    opts.store ?? `sqlite:${caLayout(opts.dir).database}`,
    async (files, store) => {
      const loaded = loadAnchors({ dir: opts.dir, files, ...withPassphrase(readPassphrase(opts.passphraseFile)) });
      // A root in the bundle that ca.json does not record: what a 'rotate-root prepare' stopped before ca.json left (rotation.ts prepareRoot).
      const nextCert = caLayout(opts.dir).nextRootCert;
      const unrecordedNext = loaded.state.rootRotation === undefined && files.exists(nextCert) ? readCaCertificates(files, nextCert)[0]?.fingerprint256 : undefined;
      return { anchors: loaded, unrecordedNext, countsByRoot: await certificateCountsByRoot(store!, loaded.roots.map((r) => r.fingerprint256), now) };
    },
    false,
  );
  const describe = (kind: string, cert: X509Certificate) => {
    const notAfter = new Date(cert.validTo);
    return {
      kind,
      subject: cert.subject.replace(/\n/g, ", "),
      fingerprint256: cert.fingerprint256,
      notAfter: formatCertificateTime(notAfter),
      timeLeft: describeTimeLeft(notAfter, now),
      expiringSoon: notAfter.getTime() - now.getTime() < warnMs,
    };
  };
  const rotation = anchors.state.rootRotation;
  const roots = anchors.roots.map((root) => ({
    ...describe(
      root.fingerprint256 === anchors.issuerRoot.fingerprint256
        ? "root (active)"
        : rotation?.previousRootFingerprint === root.fingerprint256
          ? "root (retiring)"
          : root.fingerprint256 === unrecordedNext
            ? "root (prepare interrupted)"
            : "root (next)",
      root,
    ),
    liveCertificates: countsByRoot.get(root.fingerprint256)?.live ?? 0,
    certificates: countsByRoot.get(root.fingerprint256) ?? { unexpired: 0, live: 0, superseded: 0, revoked: 0 },
  }));
  const issuer = describe("issuer", anchors.issuer.certificate);
  const entries = [...roots, issuer];
  const bundleVersion = trustBundleVersion(anchors.roots.map((r) => r.fingerprint256));
  const trustingEveryCa = rootsTrustingEveryCa(anchors);
  const result = {
    trustDomain: anchors.trustDomain,
    mode: anchors.mode,
    bundleVersion,
    rootRotation: rotation ?? null,
    issuerStage: issuerRotationStage(anchors.issuer.certificate, now),
    anchors: entries,
    rootsTrustingEveryCa: trustingEveryCa.map((entry) => ({ fingerprint256: entry.root.fingerprint256, acceptedAt: entry.acceptedAt ?? null })),
  };
  if (opts.json) process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
  else {
    process.stdout.write(`trust domain ${anchors.trustDomain} (${anchors.mode})${rotation ? `, root rotation ${rotation.phase}` : ""}; trust bundle version ${bundleVersion} (${roots.length} root${roots.length === 1 ? "" : "s"})\n`);
    for (const root of roots) {
      const c = root.certificates;
      const others = [c.superseded > 0 ? `${c.superseded} superseded` : "", c.revoked > 0 ? `${c.revoked} revoked` : ""].filter((t) => t !== "");
      process.stdout.write(
        `  ${root.kind.padEnd(16)} ${root.subject}\n` +
          `  ${"".padEnd(16)} ${root.fingerprint256}\n` +
          `  ${"".padEnd(16)} expires ${root.notAfter}  ${root.timeLeft}${root.expiringSoon ? `  ← within --warn ${opts.warn}` : ""}\n` +
          `  ${"".padEnd(16)} ${c.live} live certificate${c.live === 1 ? "" : "s"} chain${c.live === 1 ? "s" : ""} to it${others.length > 0 ? ` (not counted: ${others.join(", ")})` : ""}` +
          `${c.live > 0 && root.kind !== "root (active)" ? `; list them: meshward cert list --dir ${opts.dir} --root ${root.fingerprint256} --live` : ""}\n`,
      );
      if (root.kind === "root (prepare interrupted)") {
        process.stdout.write(`  ${"".padEnd(16)} not recorded in ca.json: a 'rotate-root prepare' stopped before it finished; run 'meshward ca rotate-root prepare --dir ${opts.dir}' again to finish it\n`);
      }
      const trusting = trustingEveryCa.find((entry) => entry.root.fingerprint256 === root.fingerprint256);
      if (trusting !== undefined) {
        process.stdout.write(`  ${"".padEnd(16)} does not confine identities to spiffe://${anchors.trustDomain}: every CA under it can mint any of them (${howTrusted(trusting)})\n`);
      }
    }
    process.stdout.write(`  ${"issuer".padEnd(16)} expires ${issuer.notAfter}  ${issuer.timeLeft}${result.issuerStage !== "current" ? ` (rotation stage: ${result.issuerStage})` : ""}${issuer.expiringSoon ? `  ← within --warn ${opts.warn}` : ""}\n`);
  }
  if (entries.some((e) => e.expiringSoon)) process.exitCode = 1;
}

/**
 * `meshward ca dapr-trust-bundle`: Dapr's `dapr-trust-bundle` (ConfigMap, and with --secret the
 * Secret with `ca.crt` alone) or the PEM for self-hosted daprd, from every root in the CA's trust
 * bundle now (both during a root rotation). Reads certificates only: no key, no passphrase.
 */
export async function caDaprTrustBundle(opts: OptionValues): Promise<void> {
  const pem = opts.format === "pem";
  if (pem && opts.secret === true) throw new MeshwardError("E_USAGE", "--secret goes with --format kubernetes (the PEM is the anchors alone)");
  if (pem && opts.namespace !== undefined) throw new MeshwardError("E_USAGE", "--namespace goes with --format kubernetes (the PEM names no namespace)");
  // Before the store is opened: a directory that is no CA gets no ca.db made in it.
  readCaState(opts.dir);
  const roots = await withCaFiles(opts.dir, opts.store, async (files) => readCaCertificates(files, caLayout(opts.dir).bundle), false);
  // Loaded here: it brings yaml, which no other `ca` subcommand needs.
  const { daprTrustAnchorsPem, daprTrustBundleManifests } = await import("../../ca/dapr-trust-bundle.ts");
  const text = pem ? daprTrustAnchorsPem(roots) : daprTrustBundleManifests({ roots, namespace: opts.namespace ?? "dapr-system", secret: opts.secret === true });
  if (opts.out === undefined) {
    process.stdout.write(text);
    return;
  }
  writeFileAtomic(opts.out, text, 0o644);
  process.stdout.write(`wrote ${pem ? "the trust anchors (PEM)" : `Dapr's trust bundle (${opts.secret === true ? "ConfigMap and Secret" : "ConfigMap"} ${opts.namespace ?? "dapr-system"}/dapr-trust-bundle)`} with ${roots.length} root${roots.length === 1 ? "" : "s"} to ${opts.out}\n`);
}

/** After an import with --trust-every-ca-under-root: what was recorded, or that nothing needed to be. */
function trustEveryCaNote(recorded: boolean, root: X509Certificate, trustDomain: string): string {
  if (!recorded) return `meshward: note: ${TRUST_EVERY_CA_FLAG} was not needed: the root's nameConstraints confine identities to spiffe://${trustDomain}; nothing recorded\n`;
  return (
    `meshward: warning: root ${JSON.stringify(root.subject.replace(/\n/g, ", "))} (${root.fingerprint256}) does not confine identities to spiffe://${trustDomain}: ` +
    `every CA it has signed or will sign can mint certificates for any workload of ${trustDomain} that the mesh accepts. ` +
    `Accepted with ${TRUST_EVERY_CA_FLAG} and recorded in ca.json ('meshward ca status' shows it; 'meshward ca serve' warns at every start)\n`
  );
}

/**
 * Unexpired certificates per root, split the way `rotate-root retire` sees them: live ones (what
 * it waits for), and those that no longer count: superseded by a renewal, or revoked.
 */
async function certificateCountsByRoot(store: Store, roots: readonly string[], now: Date): Promise<Map<string, { unexpired: number; live: number; superseded: number; revoked: number }>> {
  const live = await store.countValidByRoot(now);
  const revoked = new Set((await store.listRevocations()).map((r) => r.serial));
  const counts = new Map<string, { unexpired: number; live: number; superseded: number; revoked: number }>();
  for (const root of roots) {
    const records = await store.listIssuances({ rootFingerprint: root, validAt: now });
    const superseded = await store.supersededBy(records.filter((r) => !revoked.has(r.serial)).map((r) => r.serial));
    counts.set(root, {
      unexpired: records.length,
      live: live.get(root) ?? 0,
      superseded: superseded.size,
      revoked: records.filter((r) => revoked.has(r.serial)).length,
    });
  }
  return counts;
}

function withPassphrase(passphrase: string | undefined): { passphrase?: string } {
  return passphrase === undefined ? {} : { passphrase };
}

/**
 * Shortest root or issuer lifetime accepted. Anchors are backdated 15 minutes, a leaf is cut to
 * the issuer's remaining life and workloads renew at half of it: below an hour a CA is expired, or
 * expiring before anything it signs is renewed once (`--root-ttl 0s` made an expired CA).
 */
const MIN_ANCHOR_TTL_MS = 3_600_000;

function anchorTtl(value: string, flag: string): number {
  const ms = flagDuration(value, flag);
  if (ms < MIN_ANCHOR_TTL_MS) {
    throw new MeshwardError(
      "E_DURATION_INVALID",
      `${flag} ${JSON.stringify(value)} is too short: a root or issuer must live at least 1h (they are usually years: 10y for a root, 1y for an issuer; a root shorter than the issuer cuts the issuer to the root's life)`,
      { details: { usage: true } },
    );
  }
  return ms;
}

/** A certificate file given on the command line: errors name the flag and the file. */
function readCertificateFile(file: string, flag: string): string {
  const text = readTextFile(file, `${flag} file`);
  try {
    for (const der of certificatesFromPem(text)) new X509Certificate(der);
  } catch (error) {
    const why = isMeshwardError(error) ? `${error.message}; give the certificate as PEM (-----BEGIN CERTIFICATE-----)` : "a CERTIFICATE block does not hold an X.509 certificate (damaged or truncated file)";
    throw new MeshwardError("E_PEM_INVALID", `${flag} ${file}: ${why}`, { details: { file } });
  }
  return text;
}

/** A private key file given on the command line, checked as it will be read: errors name the flag and the file, never the key. */
/**
 * --issuer-key-passphrase-file: the imported key's own passphrase (the file without its final
 * newline), if given. It decrypts an issuer key, so it is held to --passphrase-file's rule
 * (owner only, or a Kubernetes Secret with fsGroup; E_KEY_PERMISSIONS), checked before it is read.
 */
function readIssuerKeyPassphrase(file: string | undefined): string | undefined {
  if (file === undefined) return undefined;
  assertPrivateFile(file, "issuer key passphrase file");
  return readTextFile(file, "passphrase file", INPUT_LIMITS.secret).replace(/\r?\n$/, "");
}

function readKeyFile(file: string, flag: string, passphrase: string | undefined, passphraseHint: string): string {
  const text = readTextFile(file, `${flag} file`);
  try {
    decodePrivateKey(text, passphrase);
  } catch (error) {
    if (!isMeshwardError(error)) throw error;
    const message = error.code === "E_KEY_PASSPHRASE_REQUIRED" ? `the private key is encrypted; ${passphraseHint}` : error.message;
    throw new MeshwardError(error.code, `${flag} ${file}: ${message}`, { details: { file, ...(error.details ?? {}) } });
  }
  return text;
}

/**
 * A step that writes a key, given a passphrase, on a CA whose keys are not encrypted: the new key
 * is encrypted and ca.json records that the CA now encrypts its keys. Said once, on stderr.
 */
function encryptionNote(dir: string, files: AnchorFiles, passphrase: string | undefined): string | undefined {
  if (passphrase === undefined || caKeysEncrypted(dir, readCaState(dir, files), files)) return undefined;
  return (
    `meshward: note: ${dir} kept its keys unencrypted; the new key is encrypted with the passphrase given (--passphrase-file or MESHWARD_CA_PASSPHRASE), and from now on this CA keeps its keys encrypted: ` +
    "every command that reads or writes them, 'meshward ca serve' included, needs the passphrase (a CA running without it keeps its previous issuer until restarted with it)\n"
  );
}
