import { execFile, spawn, type ChildProcess } from "node:child_process";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse as parseYaml, parseAllDocuments } from "yaml";
import { caConfigSchema } from "../../src/config/ca.ts";
import { MESHWARD_BIN } from "../helpers/cli.ts";
import { buildGoCheck, daprCsr, daprdToken, signCertificate } from "./daprd-client.ts";
import { makeDaprAnchors } from "./openssl-anchors.ts";

// Runs the shell blocks of docs/migrating-from-dapr-sentry.md as a user would (bash, `meshward` on
// PATH, a scratch directory). Blocks that need a cluster (kubectl) or a daprd binary cannot run
// here; for them the test does what they do with test/dapr's daprd-like client. A new shell block
// in the guide fails this test until it is run here or listed as not runnable.
const DOC = fileURLToPath(new URL("../../docs/migrating-from-dapr-sentry.md", import.meta.url));

function shellBlocks(markdown: string): string[] {
  return [...markdown.matchAll(/```sh\n([\s\S]*?)```/g)].map((m) => m[1] as string);
}

describe("docs/migrating-from-dapr-sentry.md, command by command", () => {
  let work: string;
  let bin: string;
  let goCheck: string;
  const blocks = shellBlocks(readFileSync(DOC, "utf8"));
  const children: ChildProcess[] = [];
  const handled = new Set<string>();
  const env = () => ({ ...process.env, PATH: `${bin}:${process.env.PATH}` });

  const bash = (script: string, cwd: string) =>
    new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
      execFile("bash", ["-euo", "pipefail", "-c", script], { cwd, env: env(), timeout: 60_000 }, (error, stdout, stderr) =>
        resolve({ code: error ? ((error as { code?: number }).code ?? 1) : 0, stdout, stderr }),
      );
    });
  const block = (pattern: RegExp) => {
    const found = blocks.find((b) => pattern.test(b));
    expect(found, `a shell block matching ${pattern}`).toBeDefined();
    handled.add(found as string);
    return found as string;
  };

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), "meshward-migration-doc-"));
    bin = join(work, "bin");
    mkdirSync(bin);
    writeFileSync(join(bin, "meshward"), `#!/bin/sh\nexec "${process.execPath}" "${MESHWARD_BIN}" "$@"\n`);
    chmodSync(join(bin, "meshward"), 0o755);
    goCheck = await buildGoCheck();
  }, 240_000);

  afterAll(async () => {
    for (const child of children) {
      if (child.exitCode === null) {
        child.kill("SIGTERM");
        await new Promise((resolve) => child.once("close", resolve));
      }
    }
    rmSync(work, { recursive: true, force: true });
  });

  it("importing Sentry >= 1.18 (Ed25519) anchors: ca init, shred, ca status", async () => {
    // The kubectl block needs a cluster; it writes the dapr-trust-bundle Secret's three files, made here by openssl.
    const kubectl = block(/kubectl -n \$ns get secret dapr-trust-bundle/);
    expect(kubectl).toMatch(/> ca\.crt[\s\S]*> issuer\.crt[\s\S]*> issuer\.key/);
    const cwd = join(work, "import");
    makeDaprAnchors(cwd, { key: "ed25519" });
    const script = block(/meshward ca init --trust-domain public --dir \.\/ca --root-cert/);
    const result = await bash(script, cwd);
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout).toMatch(/Created a meshward CA for trust domain public in \.\/ca \(imported root\)/);
    expect(result.stdout).toMatch(/trust domain public \(external-root\)/);
    expect(existsSync(join(cwd, "issuer.key"))).toBe(false);
    expect(statSync(join(cwd, "ca", "issuer.key")).mode & 0o777).toBe(0o600);
  }, 60_000);

  it("self-hosted: the CA, a join token file, and what the daprd command does with them", async () => {
    const cwd = join(work, "self-hosted");
    mkdirSync(cwd);
    const script = block(/meshward ca serve --dir \.\/ca --listen 127\.0\.0\.1:8443/);
    const lines = script.trim().split("\n");
    const serveAt = lines.findIndex((l) => l.startsWith("meshward ca serve"));
    const before = await bash(lines.slice(0, serveAt).join("\n"), cwd);
    expect(before.code, before.stderr).toBe(0);
    // Tests never bind a fixed port: 8443 becomes 0 and the port read back replaces it below.
    const serve = spawn("bash", ["-c", `exec ${lines[serveAt]!.replace("127.0.0.1:8443", "127.0.0.1:0")}`], { cwd, env: env(), stdio: ["ignore", "pipe", "pipe"] });
    children.push(serve);
    const port = await new Promise<string>((resolve, reject) => {
      let out = "";
      serve.stdout!.on("data", (d) => {
        out += d;
        const m = /listening on 127\.0\.0\.1:(\d+) as spiffe:\/\/localhost\/ns\/default\/dapr-sentry/.exec(out);
        if (m) resolve(m[1] as string);
      });
      serve.on("close", () => reject(new Error(`ca serve exited: ${out}`)));
    });
    const after = await bash(lines.slice(serveAt + 1).join("\n"), cwd);
    expect(after.code, after.stderr).toBe(0);
    const tokenFile = readFileSync(join(cwd, "orders.token"), "utf8");
    expect(tokenFile).toMatch(/^mwjt_\S+\n$/);

    // The daprd block (no daprd binary here): DAPR_TRUST_ANCHORS, DAPR_SENTRY_TOKEN_FILE, and the
    // Sentry ID from --control-plane-trust-domain / --control-plane-namespace, as daprd uses them.
    const daprd = block(/daprd --app-id orders --enable-mtls/);
    expect(daprd).toMatch(/DAPR_TRUST_ANCHORS="\$\(cat \.\/ca\/bundle\.pem\)" DAPR_SENTRY_TOKEN_FILE=\.\/orders\.token/);
    expect(daprd).toMatch(/--sentry-address 127\.0\.0\.1:8443/);
    const td = /--control-plane-trust-domain (\S+)/.exec(daprd)![1];
    const ns = /--control-plane-namespace (\S+)/.exec(daprd)![1];
    for (let renewal = 0; renewal < 2; renewal++) {
      const { csrPem } = await daprCsr(goCheck, "ed25519");
      const identity = await signCertificate({
        address: `127.0.0.1:${port}`,
        trustAnchorsPem: readFileSync(join(cwd, "ca", "bundle.pem"), "utf8"),
        sentryId: `spiffe://${td}/ns/${ns}/dapr-sentry`,
        appId: "orders",
        namespace: "default",
        csrPem,
        ...daprdToken({ tokenFileContent: readFileSync(join(cwd, "orders.token"), "utf8") }),
      });
      expect(identity.spiffeId).toBe("spiffe://public/ns/default/orders");
      expect(identity.chain[0]!.publicKey.asymmetricKeyType).toBe("ed25519");
    }

    // JWT-SVIDs: the curl block against this CA.
    const curl = block(/curl --cacert \.\/ca\/bundle\.pem https:\/\/localhost:8443\/\.well-known\/openid-configuration/);
    const fetched = await bash(curl.replaceAll("localhost:8443", `localhost:${port}`).replace(/\n(?=curl)/, "\necho\n"), cwd);
    expect(fetched.code, fetched.stderr).toBe(0);
    const [discovery, jwks] = fetched.stdout.trim().split(/\n(?=\{)/).map((t) => JSON.parse(t));
    expect(discovery.issuer).toBe(`https://localhost:${port}`);
    expect(discovery.jwks_uri).toBe(`https://localhost:${port}/.well-known/jwks.json`);
    expect(jwks.keys[0]).toMatchObject({ kty: "EC", crv: "P-256", alg: "ES256", use: "sig" });
    expect(jwks.keys[0].d).toBeUndefined();
  }, 120_000);

  it("rotating the root with daprd: prepare, then `meshward ca dapr-trust-bundle | kubectl apply -f -` sends dapr-trust-bundle's ca.crt = the two-root bundle.pem before the injector restarts; after retire the one-root bundle; never a key", async () => {
    // kubectl needs a cluster: a stand-in on PATH records each call and what `apply -f -` reads
    // from the pipe, so the test sees what the API server would get.
    const cwd = join(work, "rotate-daprd");
    mkdirSync(cwd);
    const record = join(cwd, "kubectl-record");
    mkdirSync(record);
    writeFileSync(
      join(bin, "kubectl"),
      `#!/bin/sh\necho "$*" >> "${record}/calls"\ncase "$*" in *"apply -f -"*) cat > "${record}/applied.yaml";; esac\nexit 0\n`,
    );
    chmodSync(join(bin, "kubectl"), 0o755);
    const init = await bash("meshward ca init --trust-domain public --dir ./ca --key-type ed25519", cwd);
    expect(init.code, init.stderr).toBe(0);
    const script = block(/meshward ca rotate-root prepare --dir \.\/ca\n[\s\S]*dapr-trust-bundle/);
    const lines = script.trim().split("\n");
    // prepare comes first, the injector restart after the trust bundle is applied.
    expect(lines[0]).toBe("meshward ca rotate-root prepare --dir ./ca");
    expect(lines[1]).toBe("meshward ca dapr-trust-bundle --dir ./ca --namespace dapr-system | kubectl apply -f -");
    const published = () => {
      const bundle = readFileSync(join(cwd, "ca", "bundle.pem"), "utf8");
      const calls = readFileSync(join(record, "calls"), "utf8").trim().split("\n");
      expect(calls.findIndex((c) => c.includes("rollout restart deployment/dapr-sidecar-injector"))).toBeGreaterThan(calls.indexOf("apply -f -"));
      const applied = readFileSync(join(record, "applied.yaml"), "utf8");
      expect(applied).not.toMatch(/PRIVATE KEY|issuer\./);
      const docs = parseAllDocuments(applied).map((d) => d.toJSON());
      expect(docs).toEqual([{ apiVersion: "v1", kind: "ConfigMap", metadata: { name: "dapr-trust-bundle", namespace: "dapr-system", labels: { app: "dapr-sentry" } }, data: { "ca.crt": bundle } }]);
      rmSync(record, { recursive: true });
      mkdirSync(record);
      return bundle.match(/-----BEGIN CERTIFICATE-----/g)?.length;
    };
    const prepared = await bash(script, cwd);
    expect(prepared.code, prepared.stderr).toBe(0);
    expect(published()).toBe(2);
    for (const step of ["activate", "retire"]) {
      const r = await bash(`meshward ca rotate-root ${step} --dir ./ca`, cwd);
      expect(r.code, r.stderr).toBe(0);
    }
    // After retire: "the same commands again (without the prepare line)".
    const again = await bash(lines.slice(1).join("\n"), cwd);
    expect(again.code, again.stderr).toBe(0);
    expect(published()).toBe(1);
    // Self-hosted: DAPR_TRUST_ANCHORS="$(meshward ca dapr-trust-bundle --dir ./ca --format pem)" is bundle.pem.
    expect(readFileSync(DOC, "utf8")).toContain('DAPR_TRUST_ANCHORS="$(meshward ca dapr-trust-bundle --dir ./ca --format pem)"');
    const pem = await bash("meshward ca dapr-trust-bundle --dir ./ca --format pem", cwd);
    expect(pem.code, pem.stderr).toBe(0);
    expect(pem.stdout).toBe(readFileSync(join(cwd, "ca", "bundle.pem"), "utf8"));
    rmSync(join(bin, "kubectl"));
  }, 120_000);

  it("the guide's CA configuration blocks pass the CA's config schema; the RBAC grants what the validator calls", () => {
    const yamlBlocks = [...readFileSync(DOC, "utf8").matchAll(/```yaml\n([\s\S]*?)```/g)].map((m) => (m[1] as string).replace(/^ {3}/gm, ""));
    const caBlocks = yamlBlocks.filter((b) => /^(servingSpiffeId|kubernetes|jwks):/m.test(b));
    expect(caBlocks.length).toBeGreaterThanOrEqual(4);
    for (const text of caBlocks) {
      const parsed = caConfigSchema.safeParse(parseYaml(text));
      expect(parsed.success, `${text}\n${JSON.stringify(parsed.error?.issues)}`).toBe(true);
    }
    // One trust domain per CA: daprd dials spiffe://<controlPlaneTrustDomain>/ns/<ns>/dapr-sentry and
    // the control-plane services ask for controlPlaneTrustDomain, so every Sentry ID the guide's CA
    // configurations use must be in the imported CA's trust domain, the one the Helm values set.
    const caTrustDomain = /meshward ca init --trust-domain (\S+) --dir \.\/ca --root-cert/.exec(readFileSync(DOC, "utf8"))![1];
    const helm = parseYaml([...readFileSync(DOC, "utf8").matchAll(/```yaml\n([\s\S]*?)```/g)].map((m) => m[1] as string).find((b) => /controlPlaneTrustDomain:/.test(b))!);
    expect(helm.global.mtls.controlPlaneTrustDomain).toBe(caTrustDomain);
    const servingIds = caBlocks.map((b) => parseYaml(b).servingSpiffeId).filter((id): id is string => id !== undefined);
    expect(servingIds.length).toBeGreaterThanOrEqual(2);
    for (const id of servingIds) expect(id).toMatch(new RegExp(`^spiffe://${caTrustDomain}/ns/[^/]+/dapr-sentry$`));
    const rbac = yamlBlocks.find((b) => b.includes("kind: ClusterRole\n"))!;
    const role = parseAllDocuments(rbac).map((d) => d.toJSON()).find((d) => d.kind === "ClusterRole");
    expect(role.rules).toEqual([
      { apiGroups: ["authentication.k8s.io"], resources: ["tokenreviews"], verbs: ["create"] },
      { apiGroups: [""], resources: ["pods"], verbs: ["get"] },
    ]);
  });

  it("every shell block of the guide was run or is one that needs a cluster or daprd", () => {
    const unhandled = blocks.filter((b) => !handled.has(b));
    expect(unhandled).toEqual([]);
  });
});
