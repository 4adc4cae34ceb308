import type { Hit, MeshwardCaConfig, MeshwardSidecarConfig, Rule } from "../types.ts";
import { defineRule } from "./helpers.ts";

function issueHits(config: MeshwardSidecarConfig | MeshwardCaConfig): Hit[] {
  return config.schemaIssues.map((issue) => ({ path: issue.path, evidence: issue.message }));
}

/**
 * meshward's own configs are checked with the schema the component loads them with
 * (src/config/sidecar.ts, src/config/ca.ts): a file the audit reads but the sidecar or CA
 * refuses is a finding, so an example cannot look audited and still not run.
 */
export const configRules: Rule[] = [
  defineRule({
    id: "MW-CONFIG-001",
    family: "config",
    severity: "medium",
    title: "meshward sidecar config is refused by the sidecar",
    why: "`meshward sidecar --config` checks the file with a strict schema and refuses to start on an unknown key (such as `app-id` for `appId`), a wrong type or a bad value; the audit's findings about a file the sidecar will not load describe a deployment that does not exist. Missing required fields are not reported: each can also be given as a flag.",
    fix: "Use the field names and forms of docs/sidecar.md (camelCase keys such as `appId`, `tokenFile`; `peers` as a map of app id to HOST:PORT) and check with `meshward sidecar --config FILE`.",
    example: {
      file: "sidecar.yaml",
      bad: "app-id: orders\nca: ca.prod.svc:8443\nbundle: /etc/meshward/bundle.pem\ntokenFile: /var/run/secrets/meshward/token\napp: 127.0.0.1:8080\npolicy: policy.yaml\n",
      good: "appId: orders\nca: ca.prod.svc:8443\nbundle: /etc/meshward/bundle.pem\ntokenFile: /var/run/secrets/meshward/token\napp: 127.0.0.1:8080\npolicy: policy.yaml\n",
    },
    appliesTo: ["meshward-sidecar"],
    check: issueHits,
  }),
  defineRule({
    id: "MW-CONFIG-002",
    family: "config",
    severity: "medium",
    title: "meshward CA config is refused by the CA",
    why: "`meshward ca serve --config` checks the file with a strict schema and refuses to start on an unknown key (such as a `validators` list; the CA reads `defaultValidator` and `jwks`), a wrong type or a bad value.",
    fix: "Use the field names of docs/configuration.md (`defaultValidator`, `jwks.jwksUrl`, `workloadTtl`, …) and check with `meshward ca serve --config FILE`.",
    example: {
      file: "ca.yaml",
      bad: "trustDomain: prod.example.org\nlisten: 127.0.0.1:8443\nvalidators: [join-token]\n",
      good: "trustDomain: prod.example.org\nlisten: 127.0.0.1:8443\ndefaultValidator: join-token\n",
    },
    appliesTo: ["meshward-ca"],
    check: issueHits,
  }),
];
