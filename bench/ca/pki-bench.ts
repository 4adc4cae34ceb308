/**
 * PKI issuance benchmark, one process, one core:
 *   (a) node:crypto ECDSA P-256 sign/s and verify/s and the ceiling 1/(1/sign + 1/verify);
 *       also verify with a fresh key per operation (what a CA does with every new CSR);
 *   (b) meshward's path: parseCsr (incl. signature check) + issueLeafCertificate + PEM;
 *   (c) the same with @peculiar/x509 (Pkcs10CertificateRequest + X509CertificateGenerator).
 * Run: node --import tsx bench/ca/pki-bench.ts [--duration-ms 2500] [--pool 1000] [--rounds 5]
 */
import { sign, verify, X509Certificate } from "node:crypto";
import type { KeyObject } from "node:crypto";
import { pathToFileURL } from "node:url";
import { createCsr, generateKeyPair, issueLeafCertificate, parseCsr, toPem } from "../../src/pki/index.ts";
import type { Signer } from "../../src/pki/index.ts";
import { createIssuerCertificate, createRootCertificate } from "../../src/pki/certificate.ts";
import { loadX509, toWebCryptoPrivateKey } from "../../src/pki/peculiar.ts";
import { importSpki } from "../../src/pki/spki.ts";

export interface PkiBenchOptions {
  /** Measuring time per figure; default 2500 ms. */
  readonly durationMs?: number;
  /** Distinct pre-made CSRs (distinct keys) cycled through; default 1000. */
  readonly poolSize?: number;
  /** Interleaved slices for sign, fresh-key verify and meshward issuance (best kept); default 5. */
  readonly rounds?: number;
  /** Print progress and the table; default true. */
  readonly print?: boolean;
}

export interface PkiBenchResult {
  readonly signPerSec: number;
  readonly verifyPerSec: number;
  /** 1 / (1/sign + 1/verify), with a key object reused for every verify. */
  readonly ceilingPerSec: number;
  /** Verify with a freshly imported public key each time (SPKI → KeyObject + verify). */
  readonly freshKeyVerifyPerSec: number;
  /** 1 / (1/sign + 1/freshKeyVerify): the least node:crypto work one issuance needs. */
  readonly freshKeyCeilingPerSec: number;
  /**
   * The same work in one loop (import, verify, sign per operation), in the order an issuance
   * does it: the harmonic figure above combines two loops that each run alone, hot in the cache.
   */
  readonly freshKeyOneLoopPerSec: number;
  readonly meshwardIssuePerSec: number;
  /** issueLeafCertificate + PEM alone, public key already parsed (the signing half of (b)). */
  readonly meshwardLeafOnlyPerSec: number;
  readonly peculiarIssuePerSec: number;
  /** meshwardIssuePerSec / ceilingPerSec; the target is >= 0.70. */
  readonly ratioToCeiling: number;
  readonly ratioToFreshKeyCeiling: number;
  readonly ratioToFreshKeyOneLoop: number;
  readonly target: number;
}

const TARGET = 0.7;
/** Issue 20: in-process issuance at >= 80 % of the fresh-key ceiling (the least work a CSR needs). */
const FRESH_KEY_TARGET = 0.8;

/** Runs `op` in batches until `durationMs` has passed; returns operations per second. */
function measureSync(durationMs: number, op: (i: number) => void): number {
  for (let i = 0; i < 200; i++) op(i); // warm-up
  let count = 0;
  const start = performance.now();
  let now = start;
  while (now - start < durationMs) {
    for (let j = 0; j < 50; j++) op(count++);
    now = performance.now();
  }
  return (count * 1000) / (now - start);
}

async function measureAsync(durationMs: number, op: (i: number) => Promise<void>): Promise<number> {
  for (let i = 0; i < 50; i++) await op(i);
  let count = 0;
  const start = performance.now();
  let now = start;
  while (now - start < durationMs) {
    for (let j = 0; j < 20; j++) await op(count++);
    now = performance.now();
  }
  return (count * 1000) / (now - start);
}

async function makeSigner(): Promise<Signer> {
  const notBefore = new Date(Date.now() - 3_600_000);
  const notAfter = new Date(Date.now() + 30 * 86_400_000);
  const rootKeys = generateKeyPair();
  const root = await createRootCertificate({ notBefore, notAfter, trustDomain: "bench.example", keyPair: rootKeys });
  const rootSigner: Signer = { certificate: new X509Certificate(root.der), der: root.der, privateKey: rootKeys.privateKey };
  const issuerKeys = generateKeyPair();
  const issuer = await createIssuerCertificate({ notBefore, notAfter, trustDomain: "bench.example", publicKey: issuerKeys.publicKey, signer: rootSigner });
  return { certificate: new X509Certificate(issuer.der), der: issuer.der, privateKey: issuerKeys.privateKey };
}

function rate(n: number): string {
  return `${Math.round(n).toLocaleString("en-US")}/s`;
}

export async function runPkiBench(options: PkiBenchOptions = {}): Promise<PkiBenchResult> {
  const durationMs = options.durationMs ?? 2500;
  const poolSize = options.poolSize ?? 1000;
  const print = options.print ?? true;
  const log = (line: string) => {
    if (print) process.stdout.write(`${line}\n`);
  };

  log(`pki bench: node ${process.version}, ${durationMs} ms per figure, pool of ${poolSize} CSRs`);
  const signer = await makeSigner();
  const csrs: string[] = [];
  const spkis: Buffer[] = [];
  const signatures: Buffer[] = [];
  const message = Buffer.alloc(400, 1); // about the size of a leaf TBSCertificate
  for (let i = 0; i < poolSize; i++) {
    const keyPair = generateKeyPair();
    csrs.push(await createCsr({ keyPair, spiffeId: `spiffe://bench.example/ns/bench/app-${i}` }));
    spkis.push(keyPair.publicKey.export({ type: "spki", format: "der" }));
    signatures.push(sign("sha256", message, keyPair.privateKey));
  }

  // (a) raw node:crypto
  const fixed = generateKeyPair();
  // Keys passed bare, as src/pki/signature.ts does (DER is the default ECDSA encoding; Node 24
  // is ~25 µs slower per call when the key comes wrapped in an options object).
  const fixedSignature = sign("sha256", message, fixed.privateKey);
  const signKey = fixed.privateKey;
  const verifyKey = fixed.publicKey;
  const signOp = () => void sign("sha256", message, signKey);
  const freshVerifyOp = (i: number) => {
    const k = i % poolSize;
    const key: KeyObject = importSpki(spkis[k]!);
    if (!verify("sha256", message, key, signatures[k]!)) throw new Error("verify failed");
  };
  const freshKeyOneLoopOp = (i: number) => {
    freshVerifyOp(i);
    signOp();
  };
  // (b) meshward: sync parse + verify + DER leaf + PEM
  const notBefore = new Date(Date.now() - 900_000);
  const notAfter = new Date(Date.now() + 86_400_000);
  const issueOp = (i: number) => {
    const csr = parseCsr(csrs[i % poolSize]!);
    const leaf = issueLeafCertificate({ notBefore, notAfter, spiffeId: csr.uris[0]!, publicKey: csr.publicKey, signer });
    toPem(leaf.der, "CERTIFICATE");
  };
  // The three figures of the headline ratio are measured in turns (`rounds` slices each) and the
  // best slice of each kept: on a shared machine a figure measured alone can land in a busy
  // second that its baseline missed; the best of interleaved slices is what the code can do.
  const rounds = options.rounds ?? 5;
  const slice = durationMs / rounds;
  let signPerSec = 0;
  let freshKeyVerifyPerSec = 0;
  let meshwardIssuePerSec = 0;
  let freshKeyOneLoopPerSec = 0;
  for (let round = 0; round < rounds; round++) {
    signPerSec = Math.max(signPerSec, measureSync(slice, signOp));
    freshKeyVerifyPerSec = Math.max(freshKeyVerifyPerSec, measureSync(slice, freshVerifyOp));
    meshwardIssuePerSec = Math.max(meshwardIssuePerSec, measureSync(slice, issueOp));
    freshKeyOneLoopPerSec = Math.max(freshKeyOneLoopPerSec, measureSync(slice, freshKeyOneLoopOp));
  }
  log(`  sign            ${rate(signPerSec)}  (best of ${rounds} interleaved slices)`);
  log(`  verify (fresh)  ${rate(freshKeyVerifyPerSec)}  (best of ${rounds})`);
  log(`  meshward issue  ${rate(meshwardIssuePerSec)}  (best of ${rounds})`);
  log(`  import+verify+sign, one loop  ${rate(freshKeyOneLoopPerSec)}  (best of ${rounds})`);
  const verifyPerSec = measureSync(durationMs, () => {
    if (!verify("sha256", message, verifyKey, fixedSignature)) throw new Error("verify failed");
  });
  log(`  verify          ${rate(verifyPerSec)}`);
  const ceilingPerSec = 1 / (1 / signPerSec + 1 / verifyPerSec);
  const freshKeyCeilingPerSec = 1 / (1 / signPerSec + 1 / freshKeyVerifyPerSec);

  const parsedKeys = csrs.slice(0, Math.min(poolSize, 200)).map((pem) => parseCsr(pem));
  const meshwardLeafOnlyPerSec = measureSync(durationMs, (i) => {
    const csr = parsedKeys[i % parsedKeys.length]!;
    toPem(issueLeafCertificate({ notBefore, notAfter, spiffeId: csr.uris[0]!, publicKey: csr.publicKey, signer }).der, "CERTIFICATE");
  });
  log(`  meshward leaf   ${rate(meshwardLeafOnlyPerSec)}`);

  // (c) @peculiar/x509 for comparison
  const x509 = await loadX509();
  const signingKey = await toWebCryptoPrivateKey(signer.privateKey);
  const issuerName = new x509.X509Certificate(signer.der).subjectName;
  const aki = new x509.AuthorityKeyIdentifierExtension(Buffer.from(new x509.X509Certificate(signer.der).getExtension(x509.SubjectKeyIdentifierExtension)!.keyId, "hex").toString("hex"));
  const peculiarIssuePerSec = await measureAsync(durationMs, async (i) => {
    const request = new x509.Pkcs10CertificateRequest(csrs[i % poolSize]!);
    if (!(await request.verify())) throw new Error("CSR verify failed");
    const san = new x509.SubjectAlternativeNameExtension(request.getExtension("2.5.29.17")!.rawData);
    const certificate = await x509.X509CertificateGenerator.create({
      serialNumber: "01" + Buffer.from(crypto.getRandomValues(new Uint8Array(15))).toString("hex"),
      subject: "O=SPIFFE",
      issuer: issuerName,
      notBefore,
      notAfter,
      signingAlgorithm: { name: "ECDSA", hash: "SHA-256" },
      publicKey: await request.publicKey.export(),
      signingKey,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
        new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
        new x509.SubjectAlternativeNameExtension(san.names.toJSON()),
        await x509.SubjectKeyIdentifierExtension.create(await request.publicKey.export()),
        aki,
      ],
    });
    certificate.toString("pem");
  });
  log(`  peculiar issue  ${rate(peculiarIssuePerSec)}`);

  const result: PkiBenchResult = {
    signPerSec,
    verifyPerSec,
    ceilingPerSec,
    freshKeyVerifyPerSec,
    freshKeyCeilingPerSec,
    freshKeyOneLoopPerSec,
    meshwardIssuePerSec,
    meshwardLeafOnlyPerSec,
    peculiarIssuePerSec,
    ratioToCeiling: meshwardIssuePerSec / ceilingPerSec,
    ratioToFreshKeyCeiling: meshwardIssuePerSec / freshKeyCeilingPerSec,
    ratioToFreshKeyOneLoop: meshwardIssuePerSec / freshKeyOneLoopPerSec,
    target: TARGET,
  };
  if (print) printTable(result);
  return result;
}

function printTable(r: PkiBenchResult): void {
  const pct = (x: number) => `${(x * 100).toFixed(1)}%`;
  const rows: [string, string, string][] = [
    ["ECDSA P-256 sign (node:crypto)", rate(r.signPerSec), ""],
    ["ECDSA P-256 verify, reused key", rate(r.verifyPerSec), ""],
    ["ECDSA P-256 verify, fresh key per op", rate(r.freshKeyVerifyPerSec), ""],
    ["ceiling 1/(1/sign+1/verify)", rate(r.ceilingPerSec), "100%"],
    ["ceiling with fresh-key verify", rate(r.freshKeyCeilingPerSec), pct(r.freshKeyCeilingPerSec / r.ceilingPerSec)],
    ["the same work in one loop", rate(r.freshKeyOneLoopPerSec), pct(r.freshKeyOneLoopPerSec / r.ceilingPerSec)],
    ["(b) meshward parseCsr+issueLeaf+PEM", rate(r.meshwardIssuePerSec), pct(r.ratioToCeiling)],
    ["    leaf build+sign+PEM only (of sign/s)", rate(r.meshwardLeafOnlyPerSec), pct(r.meshwardLeafOnlyPerSec / r.signPerSec)],
    ["(c) @peculiar/x509 verify+create+PEM", rate(r.peculiarIssuePerSec), pct(r.peculiarIssuePerSec / r.ceilingPerSec)],
  ];
  const w0 = Math.max(...rows.map((row) => row[0].length));
  const w1 = Math.max(...rows.map((row) => row[1].length));
  process.stdout.write(`\n${"figure".padEnd(w0)}  ${"rate".padStart(w1)}  of ceiling\n`);
  for (const [name, value, share] of rows) process.stdout.write(`${name.padEnd(w0)}  ${value.padStart(w1)}  ${share}\n`);
  const verdict = r.ratioToCeiling >= r.target ? "MET" : "NOT MET";
  process.stdout.write(
    `\n(b)/ceiling = ${pct(r.ratioToCeiling)} (target >= ${pct(r.target)}: ${verdict}); ` +
      `(b)/fresh-key ceiling = ${pct(r.ratioToFreshKeyCeiling)} (target >= ${pct(FRESH_KEY_TARGET)}: ${r.ratioToFreshKeyCeiling >= FRESH_KEY_TARGET ? "MET" : "NOT MET"}); (b)/that work in one loop = ${pct(r.ratioToFreshKeyOneLoop)}; (b)/(c) = ${(r.meshwardIssuePerSec / r.peculiarIssuePerSec).toFixed(1)}x\n`,
  );
}

function argument(name: string): number | undefined {
  const index = process.argv.indexOf(name);
  return index === -1 ? undefined : Number(process.argv[index + 1]);
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  await runPkiBench({ durationMs: argument("--duration-ms"), poolSize: argument("--pool"), rounds: argument("--rounds") });
}
