import { MeshwardError, shownValue } from "../errors.ts";

const UNIT_MS: Record<string, number> = {
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
  w: 7 * 86_400_000,
  y: 365 * 86_400_000,
};

/** "90s", "15m", "24h", "30d", "1h30m", "10y" → milliseconds. A bare number is seconds. */
export function parseDuration(input: string, what = "duration"): number {
  const text = String(input).trim();
  if (/^\d+$/.test(text)) return Number(text) * 1000;
  const part = /(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)/gy;
  let total = 0;
  let consumed = 0;
  for (const match of text.matchAll(part)) {
    total += Number(match[1]) * (UNIT_MS[match[2] as string] as number);
    consumed += match[0].length;
  }
  if (text.length === 0 || consumed !== text.length || !Number.isFinite(total)) {
    throw new MeshwardError(
      "E_DURATION_INVALID",
      `invalid ${what} ${shownValue(input)}: use a number with a unit, such as 90s, 15m, 24h, 30d or 1h30m`,
    );
  }
  return Math.round(total);
}

/** 93784000 → "1 day 2 hours"; negative durations read "expired 3 hours ago" at the call site. */
export function formatDuration(ms: number): string {
  const abs = Math.abs(ms);
  const units: [number, string][] = [
    [365 * 86_400_000, "year"],
    [86_400_000, "day"],
    [3_600_000, "hour"],
    [60_000, "minute"],
    [1000, "second"],
  ];
  const parts: string[] = [];
  let rest = abs;
  for (const [size, name] of units) {
    if (rest >= size && parts.length < 2) {
      const n = Math.floor(rest / size);
      parts.push(`${n} ${name}${n === 1 ? "" : "s"}`);
      rest -= n * size;
    } else if (parts.length > 0) {
      break;
    }
  }
  return parts.length === 0 ? "less than a second" : parts.join(" ");
}

/** "in 23 hours" / "expired 2 days ago" relative to now. */
export function describeTimeLeft(until: Date, now: Date): string {
  const ms = until.getTime() - now.getTime();
  return ms >= 0 ? `${formatDuration(ms)} left` : `expired ${formatDuration(-ms)} ago`;
}

/**
 * A certificate's time (notBefore, notAfter) as ISO 8601 at the precision the certificate has:
 * whole seconds, `2026-12-08T13:55:15Z`. Any milliseconds (a time kept beside the certificate,
 * as the CA's store keeps the issuance's) are dropped, since X.509 truncates them: printing
 * `.575Z` showed an expiry up to a second later than the real one (review newuser L5).
 */
export function formatCertificateTime(time: Date): string {
  return new Date(certificateSecond(time)).toISOString().replace(/\.\d{3}Z$/, "Z");
}

/** The time as a certificate holds it: truncated to the whole second, in ms since the epoch. */
export function certificateSecond(time: Date): number {
  return Math.floor(time.getTime() / 1000) * 1000;
}
