import { readdirSync, readFileSync } from "node:fs";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createMtlsServer, type MtlsServer } from "../../src/transport/index.ts";
import { exec } from "../helpers/exec.ts";
import { createTestPki, type TestLeaf, type TestPki } from "../helpers/openssl-pki.ts";
import { bundleOf, makeLogger, ManualIdentity, snapshotOf } from "../transport/fixtures.ts";

// docs/troubleshooting.md, as an operator on call runs it (review ops M1, L2, L4, L5).
const ROOT = new URL("../../", import.meta.url).pathname;
const DOC = readFileSync(join(ROOT, "docs", "troubleshooting.md"), "utf8");
/** The text of one `#`…`######` section of the page, up to the next heading of any level. */
function section(heading: string): string {
  const lines = DOC.split("\n");
  const start = lines.indexOf(heading);
  expect(start, heading).toBeGreaterThanOrEqual(0);
  let fenced = false;
  let end = start + 1;
  for (; end < lines.length; end++) {
    const line = lines[end] as string;
    if (/^\s*```/.test(line)) fenced = !fenced;
    else if (!fenced && /^#{1,6} /.test(line)) break; // a shell comment in a code block is no heading
  }
  return lines.slice(start, end).join("\n");
}
const read = (path: string) => readFileSync(join(ROOT, path), "utf8");
const tsFiles = (folder: string) => readdirSync(join(ROOT, folder)).filter((name) => name.endsWith(".ts")).map((name) => read(join(folder, name)));

describe("docs/troubleshooting.md's openssl s_client commands (review ops M1)", () => {
  const TD = "example.org";
  const logger = makeLogger();
  let pki: TestPki;
  let server: MtlsServer;
  let port = 0;
  let revoked: TestLeaf;

  beforeAll(async () => {
    pki = createTestPki({ trustDomain: TD });
    revoked = pki.issueLeaf({ spiffeId: `spiffe://${TD}/ns/shop/rev` });
    const identity = new ManualIdentity(snapshotOf(pki.issueLeaf({ spiffeId: `spiffe://${TD}/ns/shop/orders` }), bundleOf([pki], new Set([revoked.serial]))));
    server = await createMtlsServer({ identity, logger }, (socket) => socket.end("hello\n"));
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    port = (server.address() as AddressInfo).port;
  });
  afterAll(async () => {
    await server?.meshward.close();
    pki?.cleanup();
  });

  it("every `openssl s_client … -cert cert.pem` in docs/ sends the chain too (-cert_chain): s_client sends only the file's first certificate", () => {
    const pages = readdirSync(join(ROOT, "docs")).filter((name) => name.endsWith(".md"));
    const bad: string[] = [];
    for (const page of pages) {
      read(join("docs", page)).split("\n").forEach((line, index) => {
        if (/^\s*openssl s_client\b.*\s-cert\s/.test(line) && !/\s-cert_chain\s/.test(line)) bad.push(`${page}:${index + 1}`);
      });
    }
    expect(bad).toEqual([]);
  });

  it("no section promises a TLS alert meshward servers do not send when they refuse a client certificate", () => {
    expect(DOC).not.toMatch(/alert certificate (revoked|expired)"/);
    expect(section("### revoked")).toMatch(/sends no "certificate revoked" alert/);
  });

  /** The revoked section's s_client command, with the page's names replaced by this test's files. */
  function revokedCommand(leaf: TestLeaf): string[] {
    const line = section("### revoked").split("\n").find((l) => l.startsWith("openssl s_client"));
    expect(line).toBeDefined();
    const words = line!.replace(/\s*<\/dev\/null\s*$/, "").split(/\s+/).slice(1);
    const names: Record<string, string> = { "orders.example:3501": `127.0.0.1:${port}`, "bundle.pem": pki.rootPath, "cert.pem": leaf.chainPath, "key.pem": leaf.keyPath };
    return words.map((word) => names[word] ?? word);
  }

  it("the command, with a valid certificate: the server verifies the chain it sends and serves", async () => {
    const r = await exec("openssl", [...revokedCommand(pki.issueLeaf({ spiffeId: `spiffe://${TD}/ns/shop/web` })), "-ign_eof"], { timeoutMs: 10_000 });
    expect(r.stdout).toContain("Verify return code: 0 (ok)");
    expect(r.stdout).toContain("hello");
  });

  it("the command, with a revoked certificate: what the page says s_client prints, and the server refuses it as revoked (not unknown_ca)", async () => {
    const r = await exec("openssl", revokedCommand(revoked), { timeoutMs: 10_000 });
    const out = r.stdout + r.stderr;
    expect(out).toContain("Verify return code: 0 (ok)");
    expect(out).not.toMatch(/alert certificate revoked/);
    expect(out).not.toContain("hello");
    for (let i = 0; i < 100 && !logger.lines.some((l) => l.includes("E_CERT_REVOKED")); i++) await new Promise((resolve) => setTimeout(resolve, 20));
    expect(logger.lines.filter((l) => /refused a connection|TLS handshake from/.test(l))).toEqual([expect.stringMatching(/refused a connection from 127\.0\.0\.1: E_CERT_REVOKED/)]);
  });

  it("negative control: without -cert_chain the same certificate is refused as unknown_ca", async () => {
    const before = logger.lines.length;
    const words = revokedCommand(revoked);
    const at = words.indexOf("-cert_chain");
    await exec("openssl", [...words.slice(0, at), ...words.slice(at + 2)], { timeoutMs: 10_000 });
    for (let i = 0; i < 100 && logger.lines.length === before; i++) await new Promise((resolve) => setTimeout(resolve, 20));
    expect(logger.lines.slice(before)).toEqual([expect.stringMatching(/TLS handshake from 127\.0\.0\.1 failed: UNABLE_TO_VERIFY_LEAF_SIGNATURE/)]);
  });
});

describe("docs/troubleshooting.md names what the code answers", () => {
  it("the sidecar's refusal table: every code it shows exists, and every reason the HTTP/1.1 relay answers itself has a row (review ops L2)", () => {
    const table = section("## Requests the sidecar refuses itself");
    const source = [...tsFiles("src/proxy"), ...tsFiles("src/proxy/http1")].join("\n");
    const shown = [...table.matchAll(/^\| `\d{3} (E_[A-Z_]+)` \| (?:`([a-z_]+)`|—)/gm)];
    expect(shown.length).toBeGreaterThanOrEqual(8);
    for (const [, code] of shown) expect(source, code).toContain(`"${code}"`);
    const relay = read("src/proxy/http1/relay.ts");
    const clientErrors = /const CLIENT_ERRORS[^=]*= \{([\s\S]*?)\n\};/.exec(relay)?.[1] ?? "";
    const reasons = [...clientErrors.matchAll(/^\s+([a-z_]+):/gm)].map((m) => m[1] as string);
    expect(reasons.length).toBeGreaterThanOrEqual(8);
    const rowReasons = new Set(shown.map((m) => m[2]));
    for (const reason of reasons) expect(rowReasons.has(reason), reason).toBe(true);
  });

  it("the CA errors table lists every code a client can get from the issuer, the validators and the name checks (review ops L5)", () => {
    const table = section("## CA errors");
    const thrown = [read("src/ca/issuer.ts"), ...tsFiles("src/ca/attest")].flatMap((text) => [...text.matchAll(/new MeshwardError\(\s*"(E_[A-Z_]+)"/g)].map((m) => m[1] as string));
    const names = /const INVALID_NAMES = new Set\(\[([^\]]*)\]\)/.exec(read("src/ca/api/grpc-status.ts"))?.[1] ?? "";
    const invalidNames = [...names.matchAll(/"(E_[A-Z_]+)"/g)].map((m) => m[1] as string);
    expect(invalidNames).toContain("E_SPIFFE_ID_NOT_WORKLOAD");
    // Configuration read when the CA starts (`ca serve` exits with it): never a client's answer.
    const startUp = new Set(["E_CONFIG_INVALID", "E_JWKS_INVALID"]);
    const codes = new Set([...thrown, ...invalidNames].filter((code) => !startUp.has(code)));
    expect(codes).toContain("E_ISSUER_EXPIRING");
    expect(codes).toContain("E_ATTESTATION_NO_CERT");
    const missing = [...codes].filter((code) => !table.includes(`\`${code}\``));
    expect(missing).toEqual([]);
  });

  it("the CA's address is a DNS name its certificate carries; no curl to the CA by a bare IP address (review ops L4)", () => {
    expect(DOC).toMatch(/\| `ca\.example:8443` \| .*DNS names its serving certificate carries \(`ca serve --dns-name`, `localhost` by default/);
    expect(DOC).toMatch(/curl --cacert bundle\.pem --resolve localhost:8443:\S+ https:\/\/localhost:8443\//);
    for (const [line] of DOC.matchAll(/^curl .*https:\/\/.*$/gm)) {
      expect(line, line).not.toMatch(/https:\/\/(\d{1,3}\.){3}\d{1,3}|https:\/\/\[/);
    }
  });
});
