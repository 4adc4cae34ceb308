import { Histogram, Registry } from "prom-client";
import { describe, expect, it } from "vitest";
import { LabelledHistogram } from "../../src/telemetry/histogram.ts";
import { createMetrics } from "../../src/telemetry/metrics.ts";

const BUCKETS = [0.001, 0.005, 0.01, 0.1, 1];
const OBSERVATIONS: Array<[Record<"direction" | "status_class", string>, number]> = [
  [{ direction: "inbound", status_class: "2xx" }, 0.0004],
  [{ direction: "inbound", status_class: "2xx" }, 0.001], // on a bound: counts in that bucket (le is "less or equal")
  [{ direction: "inbound", status_class: "2xx" }, 0.0072],
  [{ direction: "outbound", status_class: "5xx" }, 0.5],
  [{ direction: "outbound", status_class: "5xx" }, 12], // above every bound: only +Inf
  [{ direction: "inbound", status_class: "2xx" }, 0],
];

describe("LabelledHistogram", () => {
  it("exposes exactly what prom-client's Histogram exposes for the same observations", async () => {
    const ours = new Registry();
    const histogram = new LabelledHistogram("meshward_test_duration_seconds", "Test latency.", ["direction", "status_class"], BUCKETS);
    ours.registerMetric(histogram as never);
    const theirs = new Registry();
    const reference = new Histogram({ name: "meshward_test_duration_seconds", help: "Test latency.", labelNames: ["direction", "status_class"], buckets: BUCKETS, registers: [theirs] });
    for (const [labels, value] of OBSERVATIONS) {
      histogram.observe(labels, value);
      reference.observe(labels, value);
    }
    const text = await ours.metrics();
    expect(text).toBe(await theirs.metrics());
    expect(text).toContain('meshward_test_duration_seconds_bucket{le="0.001",direction="inbound",status_class="2xx"} 3');
    expect(text).toContain('meshward_test_duration_seconds_bucket{le="+Inf",direction="outbound",status_class="5xx"} 2');
    expect(await ours.getMetricsAsJSON()).toEqual(await theirs.getMetricsAsJSON());
  });

  it("a bound series is the same series the labels name", () => {
    const histogram = new LabelledHistogram("meshward_test_duration_seconds", "t", ["direction", "status_class"], BUCKETS);
    const bound = histogram.series({ direction: "inbound", status_class: "2xx" });
    bound.observe(0.002);
    histogram.observe({ status_class: "2xx", direction: "inbound" }, 0.003);
    expect(histogram.series({ direction: "inbound", status_class: "2xx" })).toBe(bound);
    expect(bound.count).toBe(2);
    expect(bound.sum).toBeCloseTo(0.005, 10);
    expect([...bound.counts]).toEqual([0, 2, 0, 0, 0, 0]);
    expect(histogram.series({ direction: "inbound", status_class: "5xx" })).not.toBe(bound);
  });

  it("refuses unknown or missing labels, a non-finite value and bad buckets, with what was wrong", () => {
    const histogram = new LabelledHistogram("meshward_test_duration_seconds", "t", ["direction"], BUCKETS);
    expect(() => histogram.observe({ direction: "inbound", path: "/x" } as never, 1)).toThrow(/takes the labels \[direction\]; unknown: path/);
    expect(() => histogram.observe({} as never, 1)).toThrow(/missing: direction/);
    for (const value of [Number.NaN, Number.POSITIVE_INFINITY]) expect(() => histogram.observe({ direction: "inbound" }, value)).toThrow(/finite number/);
    expect(histogram.get().values.find((v) => v.metricName.endsWith("_count"))?.value).toBeUndefined(); // nothing was counted
    expect(() => new LabelledHistogram("meshward_test_duration_seconds", "t", [], [0.1, 0.1])).toThrow(/strictly increasing/);
    expect(() => new LabelledHistogram("meshward_test_duration_seconds", "t", [], [])).toThrow(/strictly increasing/);
    expect(() => createMetrics().histogram({ name: "meshward_test_duration_seconds", help: "t", labelNames: ["le"] })).toThrow(/le is the bucket label/);
  });

  it("an unlabelled histogram shows its zero series before any observation, and again after reset", async () => {
    const metrics = createMetrics();
    const histogram = metrics.histogram({ name: "meshward_test_wait_seconds", help: "t", buckets: [1] });
    expect(await metrics.text()).toContain("meshward_test_wait_seconds_count 0");
    histogram.observe({}, 2);
    expect(await metrics.text()).toContain("meshward_test_wait_seconds_count 1");
    histogram.reset();
    expect(await metrics.text()).toContain("meshward_test_wait_seconds_count 0");
  });

  it("the registry's factory returns the one histogram per name and refuses a conflicting definition", () => {
    const metrics = createMetrics();
    const a = metrics.histogram({ name: "meshward_test_duration_seconds", help: "t", labelNames: ["direction"] });
    expect(metrics.histogram({ name: "meshward_test_duration_seconds", help: "t", labelNames: ["direction"] })).toBe(a);
    expect(() => metrics.histogram({ name: "meshward_test_duration_seconds", help: "t", labelNames: ["result"] })).toThrow(/already registered as a histogram/);
    expect(() => metrics.counter({ name: "meshward_test_duration_seconds", help: "t" })).toThrow();
  });
});
