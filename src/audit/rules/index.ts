import type { Rule } from "../types.ts";
import { accessRules } from "./access.ts";
import { configRules } from "./config.ts";
import { kubernetesRules } from "./kubernetes.ts";
import { microRules } from "./micro.ts";
import { mtlsRules } from "./mtls.ts";
import { secretRules } from "./secrets.ts";
import { transportRules } from "./transport.ts";

/** Every rule, in documentation order. Ids are stable: never renumber, only add. */
export const ALL_RULES: readonly Rule[] = [
  ...mtlsRules,
  ...accessRules,
  ...transportRules,
  ...secretRules,
  ...kubernetesRules,
  ...microRules,
  ...configRules,
];

export function ruleById(id: string): Rule | undefined {
  return ALL_RULES.find((rule) => rule.id === id);
}
