import { parse as parseYaml } from "yaml";
import { parseAccessControl } from "../../src/policy/index.ts";

/** An access policy for app1 in namespace default (global default deny) with `operations` (YAML list items, indented for `operations:`). */
export const parseApp1Policy = (operations: string, appDefault = "deny") =>
  parseAccessControl(
    parseYaml(`accessControl:
  defaultAction: deny
  policies:
  - appId: app1
    namespace: default
    defaultAction: ${appDefault}
    operations:
${operations}`),
    "test.yaml",
  );

/** The caller those policies name. */
export const APP1_CALLER = { trustDomain: "public", namespace: "default", appId: "app1" };
