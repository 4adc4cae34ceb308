import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runCli, startCli, type LongRunning } from "../helpers/cli.ts";
import { buildGoCheck, daprCsr, daprdToken, SentryCallError, signCertificate, type DaprdRequest } from "./daprd-client.ts";

// meshward's CA as an unmodified daprd sees it (issue 16). The client in daprd-client.ts follows
// dapr/dapr pkg/security/sentry.go, pkg/security/token/token.go and dapr/kit crypto/spiffe/spiffe.go;
// the CA runs as a real `meshward ca serve` process.
const SENTRY_ID = "spiffe://public/ns/dapr-system/dapr-sentry";

let work: string;
let goCheck: string;

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), "meshward-daprd-"));
  goCheck = await buildGoCheck();
}, 240_000);

afterAll(() => rmSync(work, { recursive: true, force: true }));

async function startCa(name: string, flags: string[], options: { init?: string[]; config?: string } = {}) {
  const dir = join(work, name);
  const init = await runCli(["ca", "init", "--trust-domain", "public", "--dir", dir, ...(options.init ?? [])]);
  expect(init.code, init.stderr).toBe(0);
  const extra: string[] = [];
  if (options.config !== undefined) {
    writeFileSync(join(work, `${name}.yaml`), options.config);
    extra.push("--config", join(work, `${name}.yaml`));
  }
  const server = await startCli(["ca", "serve", "--dir", dir, "--listen", "127.0.0.1:0", "--serving-spiffe-id", SENTRY_ID, ...extra, ...flags], /listening on (\S+) as (\S+)/);
  return { dir, server, address: server.match[1] as string, anchors: readFileSync(join(dir, "bundle.pem"), "utf8") };
}

async function refused(promise: Promise<unknown>): Promise<SentryCallError> {
  try {
    await promise;
  } catch (error) {
    if (error instanceof SentryCallError) return error;
    throw error;
  }
  throw new Error("the CA signed a request it should have refused");
}

type Ca = Awaited<ReturnType<typeof startCa>>;

function daprd(ca: Ca, request: Partial<DaprdRequest> & Pick<DaprdRequest, "token" | "validator" | "appId">, csrPem: string) {
  return signCertificate({ address: ca.address, trustAnchorsPem: ca.anchors, sentryId: SENTRY_ID, namespace: "default", csrPem, ...request });
}

describe("a self-hosted dev CA: daprd sends UNKNOWN with no token", () => {
  let dev: Ca;
  let strict: Ca;
  beforeAll(async () => {
    dev = await startCa("dev", ["--default-validator", "insecure", "--allow-insecure-dev"]);
    strict = await startCa("strict", []);
  }, 120_000);
  afterAll(async () => {
    await dev?.server.stop();
    await strict?.server.stop();
  });

  it("UNKNOWN without a token follows --default-validator insecure (with --allow-insecure-dev)", async () => {
    const { csrPem } = await daprCsr(goCheck, "ed25519");
    // Self-hosted daprd without DAPR_SENTRY_TOKEN_FILE (GetSentryToken(false)): "" and UNKNOWN.
    const identity = await daprd(dev, { appId: "orders", ...daprdToken({}) }, csrPem);
    expect(identity.spiffeId).toBe("spiffe://public/ns/default/orders");
    expect(identity.chain).toHaveLength(2);
    expect(identity.chain[0]!.ca).toBe(false);
    expect(identity.trustChainPem.join("")).toBe(dev.anchors);
    // valid_until equals the leaf's NotAfter.
    expect(identity.validUntil.getTime()).toBe(new Date(identity.chain[0]!.validTo).getTime());
  }, 60_000);

  it("also signs dapr/kit's P-256 CSR (the stored dapr/kit versions generate P-256 keys)", async () => {
    const { csrPem } = await daprCsr(goCheck, "p256");
    const identity = await daprd(dev, { appId: "checkout", ...daprdToken({}) }, csrPem);
    expect(identity.spiffeId).toBe("spiffe://public/ns/default/checkout");
    expect(identity.chain[0]!.publicKey.asymmetricKeyDetails?.namedCurve).toBe("prime256v1");
  }, 60_000);

  it("without --allow-insecure-dev, UNKNOWN without a token is refused by the default join-token validator", async () => {
    const { csrPem } = await daprCsr(goCheck, "ed25519");
    const error = await refused(daprd(strict, { appId: "orders", ...daprdToken({}) }, csrPem));
    expect(error.details).toMatch(/E_TOKEN_MISSING/);
    const insecure = await refused(daprd(strict, { appId: "orders", token: "", validator: "INSECURE" }, csrPem));
    expect(insecure.details).toMatch(/E_VALIDATOR_DISABLED/);
  }, 60_000);

  it("a control-plane service's trust domain is refused with an error naming the one-trust-domain limit", async () => {
    const { csrPem } = await daprCsr(goCheck, "ed25519");
    // newRequestFn sets trust_domain only for dapr-operator, dapr-placement, … in the control-plane namespace.
    const error = await refused(daprd(dev, { appId: "dapr-placement", namespace: "dapr-system", trustDomain: "cluster.local", ...daprdToken({}) }, csrPem));
    expect(error.details).toMatch(/E_TRUST_DOMAIN_MISMATCH/);
    expect(error.details).toMatch(/serves only "public": a meshward CA serves one trust domain/);
    expect(error.details).toMatch(/controlPlaneTrustDomain=public/);
    // The same request in the CA's trust domain is signed.
    const same = await daprd(dev, { appId: "dapr-placement", namespace: "dapr-system", trustDomain: "public", ...daprdToken({}) }, csrPem);
    expect(same.spiffeId).toBe("spiffe://public/ns/dapr-system/dapr-placement");
  }, 60_000);

  it("daprd refuses a CA presenting another SPIFFE ID (go-spiffe AuthorizeID)", async () => {
    const { csrPem } = await daprCsr(goCheck, "ed25519");
    await expect(signCertificate({ address: dev.address, trustAnchorsPem: dev.anchors, sentryId: "spiffe://public/ns/other/dapr-sentry", namespace: "default", csrPem, appId: "orders", ...daprdToken({}) })).rejects.toThrow(/unexpected ID|UNAVAILABLE/);
  }, 60_000);
});

describe("a join token sent as daprd sends DAPR_SENTRY_TOKEN_FILE's content", () => {
  let ca: Ca;
  beforeAll(async () => {
    ca = await startCa("join", []);
  }, 120_000);
  afterAll(async () => {
    await ca?.server.stop();
  });

  const token = async (appId: string) => {
    const r = await runCli(["token", "create", "--dir", ca.dir, "--namespace", "default", "--app-id", appId]);
    expect(r.code, r.stderr).toBe(0);
    // A token file as an operator writes it: with a trailing newline.
    return `${r.stdout.trim().split("\n").pop()}\n`;
  };

  it("under JWKS (self-hosted) is recognised by its prefix and spent once", async () => {
    const file = await token("orders");
    const sent = daprdToken({ tokenFileContent: file });
    expect(sent.validator).toBe("JWKS");
    const { csrPem } = await daprCsr(goCheck, "ed25519");
    const identity = await daprd(ca, { appId: "orders", ...sent }, csrPem);
    expect(identity.spiffeId).toBe("spiffe://public/ns/default/orders");
    const again = await refused(daprd(ca, { appId: "orders", ...sent }, csrPem));
    expect(again.details).toMatch(/E_TOKEN_USED/);
  }, 60_000);

  it("under KUBERNETES (daprd in a cluster with a token file) too; a token for another app is refused", async () => {
    const sent = daprdToken({ tokenFileContent: await token("checkout"), kubernetesMode: true });
    expect(sent.validator).toBe("KUBERNETES");
    const { csrPem } = await daprCsr(goCheck, "ed25519");
    const wrongApp = await refused(daprd(ca, { appId: "payments", ...sent }, csrPem));
    expect(wrongApp.details).toMatch(/E_IDENTITY_MISMATCH/);
    const unknown = await refused(daprd(ca, { appId: "checkout", token: "mwjt_not-a-token", validator: "JWKS" }, csrPem));
    expect(unknown.details).toMatch(/E_TOKEN_UNKNOWN/);
  }, 60_000);

  it("from an older daprd in a cluster (before dapr/dapr#8503: the token file goes as JWKS in every mode) too", async () => {
    const sent = daprdToken({ tokenFileContent: await token("inventory"), kubernetesMode: true, daprd: "before-8503" });
    expect(sent.validator).toBe("JWKS");
    const { csrPem } = await daprCsr(goCheck, "ed25519");
    const identity = await daprd(ca, { appId: "inventory", ...sent }, csrPem);
    expect(identity.spiffeId).toBe("spiffe://public/ns/default/inventory");
  }, 60_000);

  it("a non-join-token under JWKS still goes to the JWKS validator (not enabled here)", async () => {
    const { csrPem } = await daprCsr(goCheck, "ed25519");
    const error = await refused(daprd(ca, { appId: "orders", token: "eyJhbGciOiJFUzI1NiJ9.e30.sig", validator: "JWKS" }, csrPem));
    expect(error.details).toMatch(/E_VALIDATOR_DISABLED/);
  }, 60_000);
});

/** A signer of test JWTs, its public JWKS written to a file the CA reads (keys generated at test time). */
async function jwtSigner(file: string) {
  const { generateKeyPair, exportJWK, SignJWT } = await import("jose");
  const { privateKey, publicKey } = await generateKeyPair("ES256");
  writeFileSync(file, JSON.stringify({ keys: [{ ...(await exportJWK(publicKey)), kid: "k1", alg: "ES256", use: "sig" }] }));
  return async (claims: Record<string, unknown>, options: { audience: string | string[]; subject?: string; issuer?: string; ttlSeconds?: number }) => {
    const now = Math.floor(Date.now() / 1000);
    let jwt = new SignJWT(claims).setProtectedHeader({ alg: "ES256", kid: "k1" }).setAudience(options.audience).setIssuedAt(now).setExpirationTime(now + (options.ttlSeconds ?? 600));
    if (options.subject !== undefined) jwt = jwt.setSubject(options.subject);
    if (options.issuer !== undefined) jwt = jwt.setIssuer(options.issuer);
    return jwt.sign(privateKey);
  };
}

describe("a Kubernetes token with the injector's audience (jwks, mapping kubernetes, default audiences)", () => {
  let ca: Ca;
  let sign: Awaited<ReturnType<typeof jwtSigner>>;
  const issuer = "https://kubernetes.default.svc.cluster.local";
  beforeAll(async () => {
    sign = await jwtSigner(join(work, "k8s-jwks.json"));
    // No audience configured: the serving SPIFFE ID and dapr.io/sentry are accepted.
    ca = await startCa("k8s-jwks", [], { config: `jwks:\n  jwksFile: ${join(work, "k8s-jwks.json")}\n  issuer: ${issuer}\n  mapping: kubernetes\n` });
  }, 120_000);
  afterAll(async () => {
    await ca?.server.stop();
  });

  const saToken = (audience: string) =>
    sign({ "kubernetes.io": { namespace: "default", serviceaccount: { name: "orders", uid: "u1" }, pod: { name: "orders-0", uid: "p1" } } }, { audience, subject: "system:serviceaccount:default:orders", issuer });

  it("accepts the audience dapr/dapr pkg/injector/patcher/sidecar_volumes.go projects (Sentry's SPIFFE ID) and the legacy dapr.io/sentry", async () => {
    const { csrPem } = await daprCsr(goCheck, "ed25519");
    for (const audience of [SENTRY_ID, "dapr.io/sentry"]) {
      // daprd in Kubernetes mode reads /var/run/secrets/dapr.io/sentrytoken/token and sends KUBERNETES.
      const identity = await daprd(ca, { appId: "orders", ...daprdToken({ kubernetesMode: true, kubernetesToken: await saToken(audience) }) }, csrPem);
      expect(identity.spiffeId).toBe("spiffe://public/ns/default/orders");
    }
  }, 60_000);

  it("takes a service-account token put in DAPR_SENTRY_TOKEN_FILE from current daprd (KUBERNETES) and from daprd before dapr/dapr#8503 (JWKS)", async () => {
    const { csrPem } = await daprCsr(goCheck, "ed25519");
    for (const version of ["current", "before-8503"] as const) {
      const sent = daprdToken({ tokenFileContent: await saToken(SENTRY_ID), kubernetesMode: true, daprd: version });
      expect(sent.validator).toBe(version === "current" ? "KUBERNETES" : "JWKS");
      const identity = await daprd(ca, { appId: "orders", ...sent }, csrPem);
      expect(identity.spiffeId).toBe("spiffe://public/ns/default/orders");
    }
  }, 60_000);

  it("refuses a token for another audience, and an app id other than the service account", async () => {
    const { csrPem } = await daprCsr(goCheck, "ed25519");
    const other = await refused(daprd(ca, { appId: "orders", ...daprdToken({ kubernetesMode: true, kubernetesToken: await saToken("https://kubernetes.default.svc") }) }, csrPem));
    expect(other.details).toMatch(/E_TOKEN_AUDIENCE/);
    const mismatch = await refused(daprd(ca, { appId: "payments", ...daprdToken({ kubernetesMode: true, kubernetesToken: await saToken(SENTRY_ID) }) }, csrPem));
    expect(mismatch.details).toMatch(/E_IDENTITY_MISMATCH/);
  }, 60_000);
});

describe("a Sentry-style JWKS token (mapping sentry: sub is the SPIFFE ID, aud the CA's ID, iss unchecked)", () => {
  let ca: Ca;
  let sign: Awaited<ReturnType<typeof jwtSigner>>;
  beforeAll(async () => {
    sign = await jwtSigner(join(work, "sentry-jwks.json"));
    // As dapr/dapr pkg/sentry/server/validator/jwks/jwks.go: no issuer, the audience is Sentry's ID.
    ca = await startCa("sentry-jwks", ["--jwks-file", join(work, "sentry-jwks.json"), "--jwt-mapping", "sentry"]);
  }, 120_000);
  afterAll(async () => {
    await ca?.server.stop();
  });

  it("issues the identity named by sub, whatever the issuer", async () => {
    const { csrPem } = await daprCsr(goCheck, "ed25519");
    for (const issuer of ["https://issuer.one.example", undefined]) {
      const token = await sign({}, { audience: SENTRY_ID, subject: "spiffe://public/ns/default/orders", ...(issuer ? { issuer } : {}) });
      // Self-hosted daprd with DAPR_SENTRY_TOKEN_FILE: the file's content, validator JWKS.
      const identity = await daprd(ca, { appId: "orders", ...daprdToken({ tokenFileContent: token }) }, csrPem);
      expect(identity.spiffeId).toBe("spiffe://public/ns/default/orders");
    }
  }, 60_000);

  it("refuses another app's sub, the legacy audience, another trust domain, a sub that is not a SPIFFE ID", async () => {
    const { csrPem } = await daprCsr(goCheck, "ed25519");
    const ask = async (appId: string, subject: string, audience = SENTRY_ID) =>
      (await refused(daprd(ca, { appId, ...daprdToken({ tokenFileContent: await sign({}, { audience, subject }) }) }, csrPem))).details;
    expect(await ask("orders", "spiffe://public/ns/default/payments")).toMatch(/E_IDENTITY_MISMATCH/);
    expect(await ask("orders", "spiffe://public/ns/default/orders", "dapr.io/sentry")).toMatch(/E_TOKEN_AUDIENCE/);
    expect(await ask("orders", "spiffe://other.td/ns/default/orders")).toMatch(/E_TRUST_DOMAIN_MISMATCH/);
    expect(await ask("orders", "orders")).toMatch(/E_TOKEN_CLAIMS/);
  }, 60_000);

  it("a JWKS validator without an issuer is refused at start unless its mapping is sentry", async () => {
    const r = await runCli(["ca", "serve", "--dir", ca.dir, "--listen", "127.0.0.1:0", "--jwks-file", join(work, "sentry-jwks.json")]);
    expect(r.code).toBe(2); // flags alone at fault (--jwks-file without --jwt-issuer): a usage error
    expect(r.stderr).toMatch(/E_CONFIG_INVALID[\s\S]*issuer is required unless mapping is sentry|issuer is required unless mapping is sentry[\s\S]*E_CONFIG_INVALID/);
  }, 60_000);
});

describe("imported Dapr >= 1.18 Ed25519 anchors (dapr-trust-bundle made by openssl)", () => {
  let ca: { dir: string; server: LongRunning & { match: RegExpMatchArray }; address: string; anchors: string };
  let anchorsDir: string;
  beforeAll(async () => {
    const { makeDaprAnchors } = await import("./openssl-anchors.ts");
    anchorsDir = join(work, "sentry-anchors");
    const sentry = makeDaprAnchors(anchorsDir, { key: "ed25519" });
    const dir = join(work, "imported");
    const init = await runCli(["ca", "init", "--trust-domain", "public", "--dir", dir, "--root-cert", sentry.rootCert, "--issuer-cert", sentry.issuerCert, "--issuer-key", sentry.issuerKey, "--trust-every-ca-under-root"]);
    expect(init.code, init.stderr).toBe(0);
    const server = await startCli(["ca", "serve", "--dir", dir, "--listen", "127.0.0.1:0", "--serving-spiffe-id", SENTRY_ID, "--default-validator", "insecure", "--allow-insecure-dev"], /listening on (\S+) as (\S+)/);
    ca = { dir, server, address: server.match[1] as string, anchors: readFileSync(sentry.rootCert, "utf8") };
  }, 120_000);
  afterAll(async () => {
    await ca?.server.stop();
  });

  it("daprd, trusting Sentry's own ca.crt, gets an identity that openssl and Go's crypto/x509 verify to it", async () => {
    const { csrPem } = await daprCsr(goCheck, "ed25519");
    // daprd keeps the trust anchors it had from Sentry: the imported root, nothing from meshward.
    const identity = await daprd(ca, { appId: "orders", ...daprdToken({}) }, csrPem);
    expect(identity.spiffeId).toBe("spiffe://public/ns/default/orders");
    expect(identity.chain[1]!.publicKey.asymmetricKeyType).toBe("ed25519");
    writeFileSync(join(work, "imported-chain.pem"), identity.chainPem);
    writeFileSync(join(work, "imported-leaf.pem"), identity.chain[0]!.toString());
    writeFileSync(join(work, "imported-issuer.pem"), identity.chain.slice(1).map((c) => c.toString()).join(""));
    const { exec } = await import("../helpers/exec.ts");
    const verify = await exec("openssl", ["verify", "-CAfile", join(anchorsDir, "ca.crt"), "-untrusted", join(work, "imported-issuer.pem"), join(work, "imported-leaf.pem")]);
    expect(verify.stdout + verify.stderr).toMatch(/imported-leaf\.pem: OK/);
    const go = await exec(goCheck, ["x509", join(anchorsDir, "ca.crt"), join(work, "imported-chain.pem"), identity.spiffeId]);
    expect(go.stdout).toMatch(/X509 OK/);
  }, 60_000);
});
