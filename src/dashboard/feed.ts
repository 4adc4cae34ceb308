/**
 * The status page's data: what a component (CA or sidecar) reports about itself, and a small
 * in-memory recorder that components feed with events. The recorder keeps the last hour in
 * minute buckets and the most recent events in fixed-size lists, so its memory is bounded
 * no matter how much traffic is refused.
 */
export type StatusComponent = "ca" | "sidecar" | "identity";
export type IdentityKind = "workload" | "issuer" | "root";

export interface IdentityStatus {
  readonly spiffeId: string;
  readonly serial: string;
  readonly notBefore: Date;
  readonly notAfter: Date;
  readonly kind: IdentityKind;
}

export interface TrustRootStatus {
  readonly subject: string;
  /** SHA-256 fingerprint, colon-separated hex (node:crypto X509Certificate.fingerprint256). */
  readonly fingerprint: string;
  readonly notAfter: Date;
  /** CA only: live certificates (valid, not revoked, not superseded) that chain to this root. */
  readonly liveCertificates?: number;
}

export interface RotationEvent {
  readonly time: Date;
  readonly kind: IdentityKind;
  readonly result: "ok" | "error";
  /** Serial of the new certificate (ok) — absent for failures. */
  readonly serial?: string;
  /** Error code of a failed rotation, e.g. E_CA_UNAVAILABLE. Never a message with secrets. */
  readonly error?: string;
}

export interface RefusalEvent {
  readonly time: Date;
  /** Peer address, host:port. */
  readonly peer: string;
  /** Handshake failure reason or error code, e.g. unknown_ca, E_SPIFFE_MISMATCH. */
  readonly reason: string;
  /** The peer's SPIFFE ID when it was known. */
  readonly spiffeId?: string;
}

/** Per-minute counts over the last hour, oldest first; the last bucket is the current minute. */
export interface MinuteSeries {
  /** Start of the first (oldest) bucket. */
  readonly start: Date;
  readonly bucketSeconds: 60;
  readonly counts: readonly number[];
  readonly total: number;
  /** Totals over the hour by reason (handshake failures) or rule (denials), largest first. */
  readonly byKey: readonly { readonly key: string; readonly count: number }[];
}

export interface StatusHealth {
  readonly ok: boolean;
  readonly checks: Readonly<Record<string, { ok: boolean; detail?: unknown }>>;
}

/**
 * CA only, with daprTrustBundle set: where the CA's upkeep of Dapr's `dapr-trust-bundle` ConfigMap
 * stands (src/ca/dapr-trust-bundle-sync.ts). Shown on the page, never a readiness check.
 */
export interface DaprTrustBundleStatus {
  readonly namespace: string;
  readonly configMap: string;
  readonly state: "pending" | "in-step" | "behind" | "failing";
  readonly lastResult?: string;
  readonly lastAttemptAt?: Date;
  readonly lastSuccessAt?: Date;
  readonly lastWriteAt?: Date;
  /** The resourceVersion the API server gave the object the CA last wrote. */
  readonly resourceVersion?: string;
  readonly failures: number;
  readonly lastError?: { readonly at: Date; readonly code: string; readonly status?: number; readonly reason?: string; readonly message: string };
  readonly retryAt?: Date;
}

export interface StatusSnapshot {
  readonly component: StatusComponent;
  /** A human name: the trust domain for a CA, namespace/app id for a sidecar, the SPIFFE ID for an identity. */
  readonly name: string;
  readonly generatedAt: Date;
  readonly identities: readonly IdentityStatus[];
  readonly roots: readonly TrustRootStatus[];
  /** Version of the trust bundle (telemetry/bundle-version.ts): equal at the CA and every workload that has fetched its bundle. */
  readonly bundleVersion?: number;
  readonly rotations: readonly RotationEvent[];
  readonly handshakeFailures: MinuteSeries;
  readonly denials: MinuteSeries;
  readonly refusals: readonly RefusalEvent[];
  readonly health: StatusHealth;
  /** CA with daprTrustBundle only. */
  readonly daprTrustBundle?: DaprTrustBundleStatus;
}

export type StatusProvider = () => StatusSnapshot | Promise<StatusSnapshot>;

export interface StatusRecorder {
  recordRotation(event: Omit<RotationEvent, "time"> & { time?: Date }): void;
  recordRefusal(event: Omit<RefusalEvent, "time"> & { time?: Date }): void;
  recordDenial(event?: { rule?: string; time?: Date }): void;
  recordHandshakeFailure(event: { reason: string; time?: Date }): void;
  /** Newest first. */
  rotations(): RotationEvent[];
  /** Newest first. */
  refusals(): RefusalEvent[];
  handshakeFailures(now?: Date): MinuteSeries;
  denials(now?: Date): MinuteSeries;
}

export interface StatusRecorderOptions {
  readonly clock?: () => Date;
  /** Rotation events kept (default 50). */
  readonly maxRotations?: number;
  /** Refusal events kept (default 100). */
  readonly maxRefusals?: number;
}

const MINUTES = 60;
/** Distinct reasons/rules tracked per minute; the rest count under "other". */
const MAX_KEYS_PER_MINUTE = 20;
/** Longest string kept from an event (a SPIFFE ID may be 2048 bytes). */
const MAX_TEXT = 2048;

export function createStatusRecorder(options: StatusRecorderOptions = {}): StatusRecorder {
  const clock = options.clock ?? (() => new Date());
  const rotations = new BoundedList<RotationEvent>(options.maxRotations ?? 50);
  const refusals = new BoundedList<RefusalEvent>(options.maxRefusals ?? 100);
  const failures = new MinuteBuckets();
  const denials = new MinuteBuckets();
  return {
    recordRotation(event) {
      rotations.push({
        time: event.time ?? clock(),
        kind: event.kind,
        result: event.result,
        ...(event.serial !== undefined ? { serial: clip(event.serial) } : {}),
        ...(event.error !== undefined ? { error: clip(event.error) } : {}),
      });
    },
    recordRefusal(event) {
      refusals.push({
        time: event.time ?? clock(),
        peer: clip(event.peer),
        reason: clip(event.reason),
        ...(event.spiffeId !== undefined ? { spiffeId: clip(event.spiffeId) } : {}),
      });
    },
    recordDenial(event = {}) {
      denials.add(event.time ?? clock(), event.rule ?? "denied");
    },
    recordHandshakeFailure(event) {
      failures.add(event.time ?? clock(), event.reason);
    },
    rotations: () => rotations.newestFirst(),
    refusals: () => refusals.newestFirst(),
    handshakeFailures: (now) => failures.series(now ?? clock()),
    denials: (now) => denials.series(now ?? clock()),
  };
}

/** The recorder's part of a snapshot: rotations, the hour's charts and recent refusals. */
export function recordedSections(recorder: StatusRecorder): Pick<StatusSnapshot, "rotations" | "handshakeFailures" | "denials" | "refusals"> {
  return { rotations: recorder.rotations(), handshakeFailures: recorder.handshakeFailures(), denials: recorder.denials(), refusals: recorder.refusals() };
}

/** An empty hour, for components that have nothing to report yet. */
export function emptyMinuteSeries(now: Date): MinuteSeries {
  return new MinuteBuckets().series(now);
}

function clip(text: string): string {
  return text.length > MAX_TEXT ? `${text.slice(0, MAX_TEXT)}…` : text;
}

class BoundedList<T> {
  private readonly items: T[] = [];
  constructor(private readonly max: number) {}
  push(item: T): void {
    this.items.push(item);
    if (this.items.length > this.max) this.items.splice(0, this.items.length - this.max);
  }
  newestFirst(): T[] {
    return [...this.items].reverse();
  }
}

interface Bucket {
  minute: number;
  count: number;
  byKey: Map<string, number>;
}

/** A ring of 60 one-minute buckets indexed by epoch minute; old buckets are reused. */
class MinuteBuckets {
  private readonly ring: Bucket[] = Array.from({ length: MINUTES }, () => ({ minute: -1, count: 0, byKey: new Map() }));

  add(time: Date, key: string): void {
    const minute = Math.floor(time.getTime() / 60_000);
    const bucket = this.ring[minute % MINUTES] as Bucket;
    if (bucket.minute !== minute) {
      if (bucket.minute > minute) return; // older than the hour this slot now holds
      bucket.minute = minute;
      bucket.count = 0;
      bucket.byKey.clear();
    }
    bucket.count += 1;
    const name = bucket.byKey.has(key) || bucket.byKey.size < MAX_KEYS_PER_MINUTE ? clip(key) : "other";
    bucket.byKey.set(name, (bucket.byKey.get(name) ?? 0) + 1);
  }

  series(now: Date): MinuteSeries {
    const current = Math.floor(now.getTime() / 60_000);
    const counts: number[] = [];
    const totals = new Map<string, number>();
    for (let minute = current - MINUTES + 1; minute <= current; minute++) {
      const bucket = this.ring[((minute % MINUTES) + MINUTES) % MINUTES] as Bucket;
      if (bucket.minute !== minute) {
        counts.push(0);
        continue;
      }
      counts.push(bucket.count);
      for (const [key, count] of bucket.byKey) totals.set(key, (totals.get(key) ?? 0) + count);
    }
    return {
      start: new Date((current - MINUTES + 1) * 60_000),
      bucketSeconds: 60,
      counts,
      total: counts.reduce((a, b) => a + b, 0),
      byKey: [...totals].map(([key, count]) => ({ key, count })).sort((a, b) => b.count - a.count || a.key.localeCompare(b.key)),
    };
  }
}
