export { createLogger, formatPrettyLine } from "./logger.ts";
export type { Logger, LoggerConfig, LogFormat, LogLevel } from "./logger.ts";
export { redactSecrets, REDACTED } from "./redact.ts";
export {
  checkMetricName,
  classifyTlsError,
  createMeshMetrics,
  createMetrics,
  HANDSHAKE_FAILURE_REASONS,
  REQUEST_DURATION_BUCKETS,
} from "./metrics.ts";
export type {
  CertKind,
  Direction,
  HandshakeFailureReason,
  HistogramOptions,
  MeshMetrics,
  MetricOptions,
  Metrics,
  MetricsConfig,
  TlsSocketLike,
} from "./metrics.ts";
export { createHealth, createOpsServer } from "./health.ts";
export type { BoundAddress, CheckKind, CheckResult, Health, HealthCheck, HealthReport, OpsServer, OpsServerConfig, RouteHandler } from "./health.ts";
export { checkHostHeader, hostOfHostHeader, isLoopbackAddress } from "./host-check.ts";
export type { HostDecision } from "./host-check.ts";
