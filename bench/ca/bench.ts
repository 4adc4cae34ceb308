/**
 * `npm run bench:ca`: in-process issuance against the node:crypto ceiling, then the CA API
 * over gRPC (mTLS) with 64 concurrent clients beside cfssl serve over HTTPS, all in one run.
 * Options: --rounds N (paired API runs, default 3), --duration-ms N, --cfssl-plain.
 */
import { runApiBench } from "./api-bench.ts";
import { runPkiBench } from "./pki-bench.ts";

const pki = await runPkiBench({ print: true });
const option = (name: string): number | undefined => (process.argv.includes(name) ? Number(process.argv[process.argv.indexOf(name) + 1]) : undefined);
const api = await runApiBench({ print: true, cfsslPlain: process.argv.includes("--cfssl-plain"), rounds: option("--rounds"), durationMs: option("--duration-ms") });
console.log("");
const fresh = pki.ratioToFreshKeyCeiling;
console.log(`summary (node ${process.version})`);
console.log(`  in-process issuance: ${pki.meshwardIssuePerSec.toFixed(0)}/s = ${(fresh * 100).toFixed(1)}% of the ${pki.freshKeyCeilingPerSec.toFixed(0)}/s fresh-key ceiling (target >= 80%: ${fresh >= 0.8 ? "MET" : "NOT MET"}), ${(pki.ratioToFreshKeyOneLoop * 100).toFixed(1)}% of the same crypto work done in one loop (${pki.freshKeyOneLoopPerSec.toFixed(0)}/s); ${(pki.ratioToCeiling * 100).toFixed(0)}% of the reused-key ceiling`);
const ratio = api.ratioToCfssl;
console.log(`  gRPC API over mTLS, 64 clients: ${api.meshwardGrpcPerSec.toFixed(0)}/s${ratio !== undefined ? `, cfssl over TLS ${api.cfsslPerSec!.toFixed(0)}/s: median ${ratio.toFixed(2)}x of ${api.ratios.map((r) => r.toFixed(2)).join(", ")} (target >= 1.00x: ${ratio >= 1 ? "MET" : "NOT MET"})` : ", cfssl not measured"}`);
