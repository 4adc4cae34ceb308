export { parseAccessControl, DEFAULT_TRUST_DOMAIN } from "./schema.ts";
export type { AccessControlConfig, Action, AppPolicy, Locate, OperationRule } from "./schema.ts";
export { compilePolicy } from "./decide.ts";
export type { AccessPolicy, AccessRequest, Caller, Decision, Explanation, MatchedOperation } from "./decide.ts";
export { normaliseOperation } from "./operation.ts";
export { daprDifferences, POLICY_DIFFERS_FROM_DAPR } from "./dapr-differences.ts";
export type { DaprDifference } from "./dapr-differences.ts";
export { operationsNeverApplyingToTcp, POLICY_OPERATIONS_NEVER_APPLY_TCP, TCP_REQUEST, tcpDeciderText, tcpInapplicableMessage } from "./tcp.ts";
export type { TcpDecider, TcpInapplicableOperation } from "./tcp.ts";
