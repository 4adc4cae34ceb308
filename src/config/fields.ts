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
