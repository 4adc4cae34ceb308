export { createStatusRecorder, emptyMinuteSeries } from "./feed.ts";
export type {
  DaprTrustBundleStatus,
  IdentityKind,
  IdentityStatus,
  MinuteSeries,
  RefusalEvent,
  RotationEvent,
  StatusComponent,
  StatusHealth,
  StatusProvider,
  StatusRecorder,
  StatusRecorderOptions,
  StatusSnapshot,
  TrustRootStatus,
} from "./feed.ts";
export { createStatusRoutes, STATUS_PATHS, statusTokenRequired } from "./routes.ts";
export type { StatusHandler, StatusRequest, StatusResponse, StatusRoutes, StatusRoutesOptions } from "./routes.ts";
export { identityFromPem, trustRootsFromPem } from "./certs.ts";
