// The differential suite (test/security/helpers/differential.ts) against Go's net/http (an
// http.ServeMux, the server most often behind a Dapr sidecar), built from apps/nethttp_app.go
// with Debian's Go, offline: one file per app, so that the two test workers share the apps.
import { differentialSuite } from "./helpers/differential.ts";

differentialSuite("go:net/http");
