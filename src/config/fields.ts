import { shownValue } from "../errors.ts";
import * as z from "zod";
import { parseHostPort, parseHostPortList } from "../util/address.ts";
import { MAX_TIMER_MS } from "../util/clock.ts";
import { formatDuration, parseDuration } from "../util/duration.ts";


/** Milliseconds of a duration a timer is armed with, or an issue on `ctx` naming what is wrong. */
function timerMs(value: string | number, what: string, minMs: number, ctx: z.RefinementCtx): number {
  let ms: number;
  try {
    ms = typeof value === "number" ? Math.round(value * 1000) : parseDuration(value, what);
  } catch (error) {
    ctx.addIssue({ code: "custom", message: (error as Error).message });
    return z.NEVER;
  }
  if (!Number.isFinite(ms) || ms < minMs) {
    ctx.addIssue({ code: "custom", message: `${what} must be at least ${minMs < 1000 ? `${minMs}ms` : formatDuration(minMs)} (got ${shownValue(value)})` });
    return z.NEVER;
  }
  if (ms > MAX_TIMER_MS) {
    ctx.addIssue({ code: "custom", message: `${what} must be at most 24d (got ${shownValue(value)})` });
    return z.NEVER;
  }
  return ms;
}

/**
 * A duration a timer is armed with (`10s`, `1m30s`, or a number of seconds), in milliseconds,
 * between `minMs` and MAX_TIMER_MS: a negative or zero timeout, or an interval of 0 (a busy
 * loop), is refused by name instead of crashing or spinning when first used.
 */
export const timerDuration = (what: string, minMs = 1) => z.union([z.string(), z.number()]).transform((value, ctx) => timerMs(value, what, minMs, ctx));

/** timerDuration for files that take durations as strings only (the CA's configuration). */
export const timerDurationText = (what: string, minMs = 1) => z.string().transform((value, ctx) => timerMs(value, what, minMs, ctx));


/** HOST:PORT[,HOST:PORT…]: the replicas of one service (the CA), refused with the parser's message. */
export const hostPortList = (what: string) =>
  z.string().superRefine((value, ctx) => {
    try {
      parseHostPortList(value, what);
    } catch (error) {
      ctx.addIssue({ code: "custom", message: (error as Error).message });
    }
  });

/** A HOST:PORT field (IPv6 in brackets; port 0 picks a free port), refused with the parser's message. */
export const hostPort = (what: string) =>
  z.string().superRefine((value, ctx) => {
    try {
      parseHostPort(value, what);
    } catch (error) {
      ctx.addIssue({ code: "custom", message: (error as Error).message });
    }
  });

const NAME = /^(?=.{1,253}$)[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?)*$/;

/** Why an outboundAllowedHosts entry (a host name, `*.suffix` or `*`) is not usable, or undefined when it is. */
export function allowedHostProblem(entry: string): string | undefined {
  if (entry === "*") return undefined;
  const name = (entry.startsWith("*.") ? entry.slice(2) : entry).replace(/\.$/, "");
  if (name.includes("*")) return `${shownValue(entry)}: a wildcard may only be "*" or lead as "*.example.com"`;
  if (/[:/@\[\]\s]/.test(name)) return `${shownValue(entry)}: give a host name only (no scheme, port, path or brackets)`;
  if (!NAME.test(name.toLowerCase())) return `${shownValue(entry)}: not a host name`;
  return undefined;
}
