import { afterAll, afterEach, beforeAll, expect, it, vi } from "vitest";
import { SecureContextHolder } from "../../src/tls/context.ts";
import { WALL_CLOCK_SLICE_MS } from "../../src/util/clock.ts";
import { createTestPki, type TestPki } from "../helpers/openssl-pki.ts";
import { bundleOf, makeLogger, ManualIdentity, snapshotOf } from "../transport/fixtures.ts";

let pki: TestPki;
beforeAll(() => {
  pki = createTestPki({ trustDomain: "example.org" });
});
afterAll(() => pki?.cleanup());
afterEach(() => vi.useRealTimers());

it("a certificate that expired while the host was suspended is withdrawn within a slice of waking, not once a monotonic timer catches up (found by review)", async () => {
  const leaf = pki.issueLeaf({ spiffeId: "spiffe://example.org/ns/default/web", notAfter: new Date(Date.now() + 10 * 60_000) });
  // A host suspend cannot be had in a test. vitest's fake timers model one: setSystemTime moves
  // Date.now() and runs no timer, as a suspend moves the wall clock while Node's (monotonic)
  // timers stand still. Only setTimeout/clearTimeout/Date are faked.
  vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "Date"], now: Date.now() });
  const holder = await SecureContextHolder.create(new ManualIdentity(snapshotOf(leaf, bundleOf([pki]))), { role: "client", logger: makeLogger() });
  try {
    vi.advanceTimersByTime(60_000);
    expect(holder.isExpired()).toBe(false);
    vi.setSystemTime(Date.now() + 60 * 60_000); // the lid closed for an hour, past the certificate's NotAfter
    vi.advanceTimersByTime(WALL_CLOCK_SLICE_MS);
    expect(holder.isExpired()).toBe(true);
    expect(() => holder.secureContext()).toThrow(expect.objectContaining({ code: "E_IDENTITY_EXPIRED" }));
  } finally {
    holder.close();
  }
});
