/**
 * `npm run bench:ca`: in-process issuance against the node:crypto ceiling, then the CA API
 * over gRPC with 64 concurrent clients beside cfssl, all in one run.
 */
import { runApiBench } from "./api-bench.ts";
import { runPkiBench } from "./pki-bench.ts";

const pki = await runPkiBench({ print: true });
const api = await runApiBench({ print: true });
console.log("\nsummary");
console.log(`  in-process issuance: ${pki.meshwardIssuePerSec.toFixed(0)}/s = ${(pki.ratioToCeiling * 100).toFixed(0)}% of the ${pki.ceilingPerSec.toFixed(0)}/s ceiling (target >= 70%)`);
console.log(`  gRPC API, 64 clients: ${api.meshwardGrpcPerSec.toFixed(0)}/s (target >= 5000/s)${api.cfsslPerSec ? `, cfssl ${api.cfsslPerSec.toFixed(0)}/s (${api.ratioToCfssl!.toFixed(2)}x)` : ""}`);
