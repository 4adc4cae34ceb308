// The differential suite (test/security/helpers/differential.ts) against http.server: one file per app,
// so that the two test workers share the apps.
import { differentialSuite } from "./helpers/differential.ts";

differentialSuite("http.server");
