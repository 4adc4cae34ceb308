import * as z from "zod";
import { parseHostPort, parseHostPortList } from "../util/address.ts";

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

/**
 * Validator names come in two spellings: Dapr's enum (`JOIN_TOKEN`, `KUBERNETES`, which the
 * docs and the sidecar config use) and the CLI's (`join-token`, `kubernetes`). Both are
 * accepted everywhere, in any case (issue 15, item 6); this gives the CLI spelling.
 */
export function validatorFlagName(value: string): string {
  return value.trim().toLowerCase().replace(/_/g, "-");
}

/** The same name in Dapr's enum spelling (`join-token` → `JOIN_TOKEN`). */
export function validatorEnumName(value: string): string {
  return value.trim().toUpperCase().replace(/-/g, "_");
}

const NAME = /^(?=.{1,253}$)[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?)*$/;

/** Why an outboundAllowedHosts entry (a host name, `*.suffix` or `*`) is not usable, or undefined when it is. */
export function allowedHostProblem(entry: string): string | undefined {
  if (entry === "*") return undefined;
  const name = (entry.startsWith("*.") ? entry.slice(2) : entry).replace(/\.$/, "");
  if (name.includes("*")) return `${JSON.stringify(entry)}: a wildcard may only be "*" or lead as "*.example.com"`;
  if (/[:/@\[\]\s]/.test(name)) return `${JSON.stringify(entry)}: give a host name only (no scheme, port, path or brackets)`;
  if (!NAME.test(name.toLowerCase())) return `${JSON.stringify(entry)}: not a host name`;
  return undefined;
}
