// The differential suite (test/security/helpers/differential.ts) against Express 4 with its body
// parsers and method-override (header, query and body), the app the `_method` body bypasses of the
// review of 2026-12-07 reached, run from apps/express_app.mjs: one file per app, so that the two
// test workers share the apps.
import { differentialSuite } from "./helpers/differential.ts";

differentialSuite("express");
