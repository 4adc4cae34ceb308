import { X509Certificate } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { caLayout, initAnchors } from "../../src/ca/anchors.ts";
import { rotateIssuer } from "../../src/ca/rotation.ts";
import { startCaServer, type CaServer } from "../../src/ca/server.ts";
import { issueJoinToken } from "../../src/ca/tokens.ts";
import { caConfigSchema } from "../../src/config/ca.ts";
import { requestCertificate } from "../../src/identity/ca-client.ts";
import { createCsr } from "../../src/pki/csr.ts";
import { generateKeyPair } from "../../src/pki/keys.ts";
import { certificatesFromPem } from "../../src/pki/pem.ts";
import { openSqliteStore } from "../../src/store/sqlite.ts";
import type { Store } from "../../src/store/store.ts";

// After `rotate-issuer --now` the outgoing issuer is retired, so the CA holds sign requests until
// the CRL set naming the new issuer is in force, at most issuerSwitchWaitMs (ISSUER_SWITCH_WAIT_MS,
// 5 s, by default), then the new issuer signs anyway (issuer-switch-unpublished). The CA's store is
// wrapped so that the CRL number, which every new set needs, is held back at will: the set naming
// the new issuer comes into force when the test says, or not at all.
const TD = "issuer-switch-wait.test";

/** The store, with nextCrlNumber held while `gate.closed` (calls wait until open() is called). */
function gatedStore(store: Store) {
  let open!: () => void;
  let opened = new Promise<void>((resolve) => (open = resolve));
  const gate = {
    closed: false,
    waiting: 0,
    close() {
      gate.closed = true;
      opened = new Promise<void>((resolve) => (open = resolve));
    },
    open() {
      gate.closed = false;
      open();
    },
  };
  const wrapped = new Proxy(store, {
    get(target, prop, receiver) {
      if (prop === "nextCrlNumber") {
        return async () => {
          if (gate.closed) {
            gate.waiting += 1;
            await opened;
          }
          return target.nextCrlNumber();
        };
      }
      const value: unknown = Reflect.get(target, prop, receiver);
      return typeof value === "function" ? value.bind(target) : value;
    },
  }) as Store;
  return { store: wrapped, gate };
}

async function waitFor(condition: () => boolean, what: string, timeoutMs = 15_000): Promise<void> {
  for (const deadline = Date.now() + timeoutMs; !condition(); ) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

describe("the issuer hold after rotate-issuer --now (issuerSwitchWaitMs)", () => {
  const cleanup: (() => Promise<unknown> | void)[] = [];
  afterEach(async () => {
    for (const step of cleanup.splice(0).reverse()) await Promise.resolve(step()).catch(() => undefined);
  });

  const setUp = async (issuerSwitchWaitMs: number) => {
    const work = mkdtempSync(join(tmpdir(), "meshward-switch-wait-"));
    cleanup.push(() => rmSync(work, { recursive: true, force: true }));
    const dir = join(work, "ca");
    await initAnchors({ dir, trustDomain: TD, now: new Date() });
    const base = openSqliteStore(caLayout(dir).database);
    cleanup.push(() => base.close());
    const { store, gate } = gatedStore(base);
    const logged: Record<string, unknown>[] = [];
    const logger = pino({ level: "info" }, { write: (line: string) => void logged.push(JSON.parse(line) as Record<string, unknown>) });
    const config = caConfigSchema.parse({ listen: "127.0.0.1:0", workloadTtl: "1h", crlRefresh: "1h", anchorPoll: "100ms", signingWorkers: 0, signRateLimit: false });
    const ca: CaServer = await startCaServer({ dir, config, logger, store, issuerSwitchWaitMs });
    cleanup.push(() => ca.close());
    cleanup.push(() => gate.open()); // before the CA closes: a refresh it waits for may be held
    const bundlePem = readFileSync(join(dir, "bundle.pem"), "utf8");
    const oldIssuer = new X509Certificate(readFileSync(join(dir, "issuer.pem")));
    const sign = async (appId: string) => {
      const token = (await issueJoinToken(ca.store, { spiffeId: `spiffe://${TD}/ns/shop/${appId}`, ttlMs: 600_000 })).token;
      const csrPem = await createCsr({ keyPair: generateKeyPair() });
      const signed = await requestCertificate({ address: ca.address, bundlePem, trustDomain: TD, timeoutMs: 60_000 }, { csrPem, token, validator: "JOIN_TOKEN", namespace: "", appId: "" });
      return new X509Certificate(certificatesFromPem(signed.certChainPem)[1]!).fingerprint256;
    };
    /** Rotates with --now while no new CRL set can be signed; returns once the CA holds the outgoing issuer. */
    const rotateHeld = async () => {
      gate.close();
      const installed = await rotateIssuer({ dir, now: new Date(), keepPrevious: false });
      await waitFor(() => logged.some((line) => line.event === "anchors-reloaded" && line.signingWith === oldIssuer.fingerprint256), "the CA to hold the outgoing issuer");
      await waitFor(() => gate.waiting > 0, "the CRL refresh naming the new issuer to begin");
      return installed.fingerprint256;
    };
    const events = () => logged.map((line) => line.event);
    return { sign, rotateHeld, gate, events, logged, oldIssuer };
  };

  it("the set naming the new issuer comes into force within the wait: requests held meanwhile are signed by the new issuer, logged issuer-switched", async () => {
    const { sign, rotateHeld, gate, events, oldIssuer } = await setUp(120_000);
    expect(await sign("before")).toBe(oldIssuer.fingerprint256);
    const newIssuer = await rotateHeld();
    let settled = false;
    const held = sign("during").finally(() => (settled = true));
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(settled).toBe(false); // waits for the set naming the new issuer
    gate.open();
    expect(await held).toBe(newIssuer);
    expect(events()).toContain("issuer-switched");
    expect(events()).not.toContain("issuer-switch-unpublished");
    expect(await sign("after")).toBe(newIssuer);
  }, 60_000);

  it("no set naming the new issuer within the wait: the CA ends the hold, the new issuer signs, logged issuer-switch-unpublished", async () => {
    const { sign, rotateHeld, gate, events, logged } = await setUp(400);
    const newIssuer = await rotateHeld();
    expect(await sign("during")).toBe(newIssuer); // answered after the wait, though no set names the new issuer
    expect(gate.closed).toBe(true); // the set was not signed meanwhile
    expect(events()).toContain("issuer-switch-unpublished");
    expect(events()).not.toContain("issuer-switched");
    const line = logged.find((l) => l.event === "issuer-switch-unpublished")!;
    expect(line.issuer).toBe(newIssuer);
    expect(String(line.msg)).toMatch(/within 0\.4 s/);
  }, 60_000);
});
