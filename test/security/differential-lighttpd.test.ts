// The differential suite (test/security/helpers/differential.ts) against lighttpd, whose CGI-style
// environment (here over SCGI) reads every non-alphanumeric header-name character as '_': one
// file per app, so that the two test workers share the apps.
import { differentialSuite } from "./helpers/differential.ts";

differentialSuite("lighttpd");
