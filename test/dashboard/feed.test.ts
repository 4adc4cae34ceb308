import { describe, expect, it } from "vitest";
import { createStatusRecorder } from "../../src/dashboard/feed.ts";

const T0 = Date.parse("2026-03-01T12:00:00.000Z");
const at = (minutes: number, seconds = 0) => new Date(T0 + minutes * 60_000 + seconds * 1000);

describe("createStatusRecorder", () => {
  it("counts handshake failures per minute over the last hour, oldest first, with totals by reason", () => {
    let now = at(0);
    const recorder = createStatusRecorder({ clock: () => now });
    recorder.recordHandshakeFailure({ reason: "unknown_ca", time: at(-59, 10) });
    recorder.recordHandshakeFailure({ reason: "unknown_ca", time: at(-1, 59) });
    recorder.recordHandshakeFailure({ reason: "expired", time: at(-1, 0) });
    recorder.recordHandshakeFailure({ reason: "expired" }); // clock: now
    recorder.recordHandshakeFailure({ reason: "expired", time: at(-60, 30) }); // 60 minutes back: outside the hour
    const series = recorder.handshakeFailures();
    expect(series.start.toISOString()).toBe(at(-59).toISOString());
    expect(series.bucketSeconds).toBe(60);
    expect(series.counts).toHaveLength(60);
    expect(series.counts[0]).toBe(1);
    expect(series.counts[58]).toBe(2);
    expect(series.counts[59]).toBe(1);
    expect(series.total).toBe(4);
    expect(series.byKey).toEqual([{ key: "expired", count: 2 }, { key: "unknown_ca", count: 2 }]);

    now = at(59); // the hour now spans minutes 0..59: only the event recorded at minute 0 is left
    expect(recorder.handshakeFailures().total).toBe(1);
    expect(recorder.handshakeFailures().counts[0]).toBe(1);
    now = at(60);
    expect(recorder.handshakeFailures().total).toBe(0);
    expect(recorder.handshakeFailures().byKey).toEqual([]);
  });

  it("reuses a bucket slot for the same minute of a later hour and ignores events older than the slot holds", () => {
    const recorder = createStatusRecorder();
    recorder.recordDenial({ rule: "a", time: at(0) });
    recorder.recordDenial({ rule: "b", time: at(60) }); // same ring slot, next hour: replaces
    recorder.recordDenial({ rule: "c", time: at(0, 5) }); // late event for the old hour: dropped
    const series = recorder.denials(at(60));
    expect(series.total).toBe(1);
    expect(series.byKey).toEqual([{ key: "b", count: 1 }]);
  });

  it("keeps memory bounded: at most 20 keys per minute (the rest are 'other'), long strings clipped, lists capped newest first", () => {
    const recorder = createStatusRecorder({ maxRotations: 3, maxRefusals: 2, clock: () => at(0) });
    for (let i = 0; i < 1000; i++) recorder.recordDenial({ rule: `rule-${i}` });
    const denials = recorder.denials();
    expect(denials.total).toBe(1000);
    expect(denials.byKey).toHaveLength(21);
    expect(denials.byKey[0]).toEqual({ key: "other", count: 980 });

    for (let i = 0; i < 10; i++) recorder.recordRotation({ kind: "workload", result: "ok", serial: `s${i}`, time: at(i) });
    expect(recorder.rotations().map((r) => r.serial)).toEqual(["s9", "s8", "s7"]);

    const huge = `spiffe://td/${"x".repeat(10_000)}`;
    recorder.recordRefusal({ peer: "1.2.3.4:5", reason: "spiffe_mismatch", spiffeId: huge });
    recorder.recordRefusal({ peer: "1.2.3.4:6", reason: "unknown_ca" });
    recorder.recordRefusal({ peer: "1.2.3.4:7", reason: "expired" });
    const refusals = recorder.refusals();
    expect(refusals.map((r) => r.peer)).toEqual(["1.2.3.4:7", "1.2.3.4:6"]);
    recorder.recordRefusal({ peer: "p", reason: "r", spiffeId: huge });
    expect(recorder.refusals()[0]?.spiffeId?.length).toBe(2049);
  });

  it("stamps events with the injected clock", () => {
    const recorder = createStatusRecorder({ clock: () => at(5) });
    recorder.recordRotation({ kind: "issuer", result: "error", error: "E_CA_UNAVAILABLE" });
    expect(recorder.rotations()).toEqual([{ time: at(5), kind: "issuer", result: "error", error: "E_CA_UNAVAILABLE" }]);
  });
});
