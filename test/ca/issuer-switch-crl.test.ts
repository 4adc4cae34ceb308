import { X509Certificate } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { initAnchors } from "../../src/ca/anchors.ts";
import { rotateIssuer } from "../../src/ca/rotation.ts";
import { startCaServer, type CaServer } from "../../src/ca/server.ts";
import { issueJoinToken } from "../../src/ca/tokens.ts";
import { caConfigSchema } from "../../src/config/ca.ts";
import { fetchFromCa, requestCertificate } from "../../src/identity/ca-client.ts";
import { createIdentity } from "../../src/identity/ca-source.ts";
import { createCsr } from "../../src/pki/csr.ts";
import { parseCrl } from "../../src/pki/crl.ts";
import { generateKeyPair } from "../../src/pki/keys.ts";
import { certificatesFromPem } from "../../src/pki/pem.ts";

// An ordinary issuer rotation (rotate-issuer without --now) must not make a workload refuse its
// renewal: a workload refuses a certificate whose issuer the CRL set in force does not publish
// (renewal-issuer-retired, the defence against a replica still signing with a retired issuer), so
// the CA may sign with the new issuer only once the set it serves publishes that issuer's CRL.
// Two CA processes' worth of servers on one CA directory (one store): the leader, which signs the
// CRL set, and a replica that sees the new issuer files within 100 ms but adopts the leader's set
// only every 2 s: the window in which it used to sign with an issuer its set did not publish.
const TD = "issuer-switch.test";
const silent = pino({ level: "silent" });

/** Whether any CRL of the set (GET /v1/crl?format=set) verifies with this issuer. */
function publishes(setDocument: Buffer, issuer: X509Certificate): boolean {
  const set = JSON.parse(setDocument.toString("utf8")) as { crls: { crl: string }[] };
  return set.crls.some((entry) => {
    try {
      parseCrl(Buffer.from(entry.crl, "base64"), issuer);
      return true;
    } catch {
      return false;
    }
  });
}

describe("an issuer rotation under load: the CA signs with an issuer only once the CRL set it serves publishes it", () => {
  let work: string;
  let dir: string;
  const closers: (() => Promise<unknown>)[] = [];
  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), "meshward-issuer-switch-"));
    dir = join(work, "ca");
    await initAnchors({ dir, trustDomain: TD, now: new Date() });
  });
  afterAll(async () => {
    for (const close of closers.reverse()) await close().catch(() => undefined);
    rmSync(work, { recursive: true, force: true });
  });

  it("every certificate issued during rotate-issuer has an issuer published in the set fetched right after it, and a renewing workload logs no renewal-issuer-retired", async () => {
    const bundlePem = readFileSync(join(dir, "bundle.pem"), "utf8");
    const leader: CaServer = await startCaServer({ dir, config: caConfigSchema.parse({ listen: "127.0.0.1:0", workloadTtl: "1h", crlRefresh: "1s", anchorPoll: "1s", signingWorkers: 0, signRateLimit: false }), logger: silent });
    closers.push(() => leader.close());
    const replica: CaServer = await startCaServer({ dir, config: caConfigSchema.parse({ listen: "127.0.0.1:0", workloadTtl: "1h", crlRefresh: "2s", anchorPoll: "100ms", signingWorkers: 0, signRateLimit: false }), logger: silent });
    closers.push(() => replica.close());
    const oldIssuer = new X509Certificate(readFileSync(join(dir, "issuer.pem")));

    const logged: Record<string, unknown>[] = [];
    const logger = pino({ level: "info" }, { write: (line: string) => void logged.push(JSON.parse(line) as Record<string, unknown>) });
    const tokenFor = async (appId: string) => (await issueJoinToken(leader.store, { spiffeId: `spiffe://${TD}/ns/shop/${appId}`, ttlMs: 600_000 })).token;
    const workload = createIdentity({ ca: replica.address, bundlePem, token: await tokenFor("web"), rng: () => 0.5, bundleRefreshMs: 3_600_000, backoff: { initialMs: 3_600_000, maxMs: 3_600_000 }, logger });
    closers.push(() => workload.close());
    await workload.ready();

    let rotated = false;
    let stop = false;
    const issued: { ca: string; issuer: X509Certificate; published: boolean }[] = [];
    const keyPair = generateKeyPair();
    const csrPem = await createCsr({ keyPair });
    /** Join-token sign requests in a loop against one CA, each checked against the set that CA serves right after. */
    const hammer = async (ca: CaServer, name: string, index: number) => {
      for (let n = 0; !stop; n++) {
        const token = await tokenFor(`${name}-${index}-${n}`);
        const signed = await requestCertificate({ address: ca.address, bundlePem, trustDomain: TD }, { csrPem, token, validator: "JOIN_TOKEN", namespace: "", appId: "" });
        const set = await fetchFromCa({ address: ca.address, bundlePem, trustDomain: TD }, "/v1/crl?format=set");
        const issuer = new X509Certificate(certificatesFromPem(signed.certChainPem)[1]!);
        issued.push({ ca: name, issuer, published: publishes(set, issuer) });
      }
    };
    let renewals = 0;
    const renewFailures: string[] = [];
    const renewLoop = async () => {
      while (!stop) {
        await workload.renewNow().then(
          () => void renewals++,
          (error: unknown) => void renewFailures.push((error as { code?: string }).code ?? String(error)),
        );
      }
    };
    const loops = [hammer(leader, "leader", 0), hammer(replica, "replica", 0), hammer(replica, "replica", 1), renewLoop()];
    const settled = Promise.all(loops).catch((error: unknown) => {
      stop = true;
      throw error;
    });

    // Some issuance before the rotation, then the rotation, then until each CA has signed a good
    // number of certificates with the new issuer (the replica's window ends at its next CRL adoption).
    const signedWith = (ca: string, issuer: X509Certificate) => issued.filter((i) => i.ca === ca && i.issuer.fingerprint256 === issuer.fingerprint256).length;
    const until = async (condition: () => boolean) => {
      for (const deadline = Date.now() + 60_000; !condition(); ) {
        if (Date.now() > deadline || stop) throw new Error("the load did not reach the expected point");
        await new Promise((r) => setTimeout(r, 20));
      }
    };
    await until(() => signedWith("leader", oldIssuer) >= 3 && signedWith("replica", oldIssuer) >= 3 && renewals >= 3);
    await rotateIssuer({ dir, now: new Date() });
    rotated = true;
    const newIssuer = new X509Certificate(readFileSync(join(dir, "issuer.pem")));
    expect(newIssuer.fingerprint256).not.toBe(oldIssuer.fingerprint256);
    const renewalsAtRotation = renewals;
    await until(() => signedWith("leader", newIssuer) >= 5 && signedWith("replica", newIssuer) >= 20 && renewals >= renewalsAtRotation + 20);
    stop = true;
    await settled;

    expect(rotated).toBe(true);
    const unpublished = issued.filter((i) => !i.published);
    const retired = logged.filter((entry) => entry.event === "renewal-issuer-retired");
    console.log(`issued ${issued.length} (${issued.filter((i) => i.issuer.fingerprint256 === newIssuer.fingerprint256).length} by the new issuer), unpublished issuer: ${unpublished.length} (leader ${unpublished.filter((i) => i.ca === "leader").length}, replica ${unpublished.filter((i) => i.ca === "replica").length}); workload renewals ${renewals}, failed ${renewFailures.length} [${[...new Set(renewFailures)].join(",")}], renewal-issuer-retired logged ${retired.length}`);
    expect(unpublished.map((i) => `${i.ca}: ${i.issuer.fingerprint256 === newIssuer.fingerprint256 ? "new" : "old"} issuer`)).toEqual([]);
    expect(retired).toEqual([]);
    expect(renewFailures).toEqual([]);
    expect(new X509Certificate(certificatesFromPem(workload.current()!.svid.certChainPem)[1]!).fingerprint256).toBe(newIssuer.fingerprint256);
  }, 90_000);
});
