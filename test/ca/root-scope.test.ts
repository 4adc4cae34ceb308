import { X509Certificate } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { initAnchors } from "../../src/ca/anchors.ts";
import { rootScopeGap, rootsTrustingEveryCa } from "../../src/ca/root-scope.ts";
import { openssl, scratchDir } from "../pki/helpers.ts";

// Which root nameConstraints confine identities to the trust domain (RFC 5280 §4.2.1.10: a URI
// constraint matches the URI's host). Roots made by the openssl CLI.
const TD = "a.test";
const scratch = scratchDir();
afterAll(() => scratch.remove());

function root(name: string, nameConstraints?: string): X509Certificate {
  const ext = scratch.file(`${name}.cnf`, ["[req]", "distinguished_name=dn", "[dn]", "[v3]", "basicConstraints=critical,CA:TRUE", "keyUsage=critical,keyCertSign,cRLSign", ...(nameConstraints ? [`nameConstraints=${nameConstraints}`] : []), ""].join("\n"));
  const key = join(scratch.dir, `${name}.key`);
  const out = join(scratch.dir, `${name}.pem`);
  openssl(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", key]);
  openssl(["req", "-x509", "-new", "-key", key, "-subj", `/CN=${name}`, "-days", "30", "-config", ext, "-extensions", "v3", "-out", out]);
  return new X509Certificate(readFileSync(out));
}

describe("rootScopeGap", () => {
  it("confined: every permitted URI subtree is the trust domain's host (case-insensitive), with or without other forms and exclusions", () => {
    expect(rootScopeGap(root("exact", `critical,permitted;URI:${TD}`), TD)).toBeUndefined();
    expect(rootScopeGap(root("upper", "critical,permitted;URI:A.Test"), TD)).toBeUndefined();
    expect(rootScopeGap(root("twice", `critical,permitted;URI:${TD},permitted;URI:A.TEST`), TD)).toBeUndefined();
    expect(rootScopeGap(root("with-dns", `critical,permitted;URI:${TD},permitted;DNS:example.com,excluded;URI:b.test`), TD)).toBeUndefined();
  });

  it("not confined: no extension, no permitted URI subtree, another host beside it, or only its subdomains", () => {
    expect(rootScopeGap(root("none"), TD)).toBe("it has no nameConstraints extension");
    expect(rootScopeGap(root("dns-only", "critical,permitted;DNS:example.com"), TD)).toMatch(/permit no URI subtree/);
    expect(rootScopeGap(root("excluded-only", "critical,excluded;URI:b.test"), TD)).toMatch(/permit no URI subtree/);
    expect(rootScopeGap(root("two", `critical,permitted;URI:${TD},permitted;URI:b.test`), TD)).toMatch(/also permit URI names under "b\.test"/);
    expect(rootScopeGap(root("parent", "critical,permitted;URI:test"), TD)).toMatch(/under "test"/);
    expect(rootScopeGap(root("subdomains", `critical,permitted;URI:.${TD}`), TD)).toMatch(/under "\.a\.test"/);
    expect(rootScopeGap(root("other-td", `critical,permitted;URI:${TD}`), "b.test")).toMatch(/under "a\.test", not only "b\.test"/);
  });

  it("a constraint form meshward does not read is a gap, not a crash", () => {
    expect(rootScopeGap(root("dirname", "critical,permitted;dirName:dn_sect\n[dn_sect]\nCN=x"), TD)).toMatch(/cannot be read .*directoryName/);
  });
});

describe("initAnchors (the SDK's way in) and the CA state", () => {
  it("refuses an unconfined root without trustEveryCaUnderRoot and records it with; a self-managed CA lists nothing", async () => {
    const org = join(scratch.dir, "org");
    await initAnchors({ dir: org, trustDomain: TD, now: new Date() });
    const imported = { rootCertPem: readFileSync(join(org, "root.pem"), "utf8"), issuerCertPem: readFileSync(join(org, "issuer.pem"), "utf8"), issuerKeyPem: readFileSync(join(org, "issuer.key"), "utf8") };
    const refusedDir = join(scratch.dir, "refused");
    await expect(initAnchors({ dir: refusedDir, trustDomain: TD, now: new Date(), imported })).rejects.toMatchObject({ code: "E_ROOT_UNCONSTRAINED" });
    const now = new Date();
    const state = await initAnchors({ dir: join(scratch.dir, "accepted"), trustDomain: TD, now, imported, trustEveryCaUnderRoot: true });
    const orgRoot = new X509Certificate(readFileSync(join(org, "root.pem")));
    expect(state.trustEveryCaUnderRoot).toEqual([{ rootFingerprint: orgRoot.fingerprint256, subject: orgRoot.subject.replace(/\n/g, ", "), acceptedAt: now.toISOString() }]);
    expect(rootsTrustingEveryCa({ roots: [orgRoot], state, mode: "external-root", trustDomain: TD }).map((e) => e.acceptedAt)).toEqual([now.toISOString()]);
    // The org CA generated its own root: no other CA under it, nothing to list.
    const selfManaged = { version: 1, trustDomain: TD, mode: "self-managed", createdAt: now.toISOString() } as const;
    expect(rootsTrustingEveryCa({ roots: [orgRoot], state: selfManaged, mode: "self-managed", trustDomain: TD })).toEqual([]);
    // An external-root directory from before the check: listed, as not accepted by anyone.
    expect(rootsTrustingEveryCa({ roots: [orgRoot], state: { ...selfManaged, mode: "external-root" }, mode: "external-root", trustDomain: TD })).toEqual([{ root: orgRoot }]);
  });
});
