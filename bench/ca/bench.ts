/**
 * `npm run bench:ca`: in-process issuance against the node:crypto ceiling, then the CA API
 * over gRPC with 64 concurrent clients beside cfssl, all in one run.
 */
import { runApiBench } from "./api-bench.ts";
import { runPkiBench } from "./pki-bench.ts";

const pki = await runPkiBench({ print: true });
const api = await runApiBench({ print: true, cfsslPlain: process.argv.includes("--cfssl-plain") });
console.log("");
const fresh = pki.ratioToFreshKeyCeiling;
console.log(`summary (node ${process.version})`);
console.log(`  in-process issuance: ${pki.meshwardIssuePerSec.toFixed(0)}/s = ${(fresh * 100).toFixed(0)}% of the ${pki.freshKeyCeilingPerSec.toFixed(0)}/s fresh-key ceiling (target >= 80%: ${fresh >= 0.8 ? "MET" : "NOT MET"}); ${(pki.ratioToCeiling * 100).toFixed(0)}% of the reused-key ceiling`);
const ratio = api.ratioToCfssl;
console.log(`  gRPC API over mTLS, 64 clients: ${api.meshwardGrpcPerSec.toFixed(0)}/s${ratio !== undefined ? `, cfssl over TLS ${api.cfsslPerSec!.toFixed(0)}/s: ${ratio.toFixed(2)}x (target >= 1.00x: ${ratio >= 1 ? "MET" : "NOT MET"})` : ", cfssl not measured"}`);
