/** Shared shapes of the audit layer: sources, resources, rules and findings. */

export type Severity = "high" | "medium" | "low";

export const SEVERITY_RANK: Readonly<Record<Severity, number>> = { high: 3, medium: 2, low: 1 };

/** A path into a YAML document (map keys and sequence indexes) or an env-style key. */
export type NodePath = readonly (string | number)[];

export interface Position {
  line: number;
  column: number;
}

/** One parsed document (or env file) with a way to turn a node path into file:line:column. */
export interface SourceDocument {
  file: string;
  /** Index of the document inside a multi-document YAML file (0 for single documents). */
  index: number;
  data: unknown;
  locate(path: NodePath): Position;
  /** Where the document comes from when it is not the file's own text (an inline kustomize patch): said in each finding's message. */
  origin?: string;
  /** JSON6902 `remove` operations of an inline kustomize patch: the path each removes, and where the operation is. */
  removed?: readonly { path: NodePath; at: Position }[];
  /** The kustomize overlay folder whose rendered output (`kubectl kustomize DIR`) this document is in: said in each finding's message. */
  rendered?: string;
  /**
   * For a rendered document: the local file the object comes from (kustomize's origin
   * annotation), and the document in it when found. A finding whose value is the same there
   * points at that document's line; one the overlay set or changed keeps the rendered line.
   * `unpatched`: the source document with only the overlay's name, namespace and labels, loaded
   * as if in the rendered output, to tell whether a finding in an object a patch changed elsewhere
   * is the source's own (the rule finds it there too).
   */
  renderedFrom?: { file: string; document: SourceDocument | undefined; unpatched?: () => Resource | undefined; untrusted?: string };
}

export interface DaprConfiguration {
  kind: "dapr-configuration";
  source: SourceDocument;
  name: string;
  namespace: string | undefined;
  spec: Record<string, unknown>;
}

export interface ComponentMetadataItem {
  name: string;
  /** Literal inline value rendered as a string ("" when absent or from a secretKeyRef). */
  value: string;
  hasInlineValue: boolean;
  hasSecretRef: boolean;
  /** Path of this metadata entry (the `value` node when present). */
  path: NodePath;
}

/** A Dapr `HTTPEndpoint`: a non-Dapr HTTP service the sidecar calls, with headers it adds. */
export interface DaprHttpEndpoint {
  kind: "dapr-httpendpoint";
  source: SourceDocument;
  name: string;
  namespace: string | undefined;
  baseUrl: string;
  /** Headers, read like component metadata (`value` or `secretKeyRef`). */
  metadata: ComponentMetadataItem[];
}

export interface DaprComponent {
  kind: "dapr-component";
  source: SourceDocument;
  name: string;
  namespace: string | undefined;
  /** `spec.type`, e.g. `state.redis`. */
  type: string;
  metadata: ComponentMetadataItem[];
}

export interface ContainerEnvVar {
  name: string;
  value: string;
  hasInlineValue: boolean;
  path: NodePath;
}

export interface Workload {
  kind: "workload";
  source: SourceDocument;
  workloadKind: string;
  name: string;
  namespace: string | undefined;
  /** Pod-template annotations (where `dapr.io/*` live). */
  annotations: Record<string, string>;
  annotationsPath: NodePath;
  /** Pod-template labels (`meshward.io/mode` may be a label: Prometheus relabelling reads it). */
  labels: Record<string, string>;
  labelsPath: NodePath;
  podSpec: Record<string, unknown>;
  podSpecPath: NodePath;
  env: ContainerEnvVar[];
  /** An Azure Container App's ingress (`properties.configuration.ingress`), when it has one. */
  ingress?: ContainerAppIngress;
}

/** `properties.configuration.ingress` of an Azure Container App (`az containerapp create --yaml`). */
export interface ContainerAppIngress {
  path: NodePath;
  /** `allowInsecure`: true when HTTP is served as is instead of redirected to HTTPS. */
  allowInsecure: boolean;
  external: boolean;
  transport: string;
  clientCertificateMode: string;
}

/**
 * A docker-compose service: its `environment:` (map or `KEY=value` list) read like a container's
 * env, for the rules on inline secrets and connection URLs.
 */
export interface ComposeService {
  kind: "compose-service";
  source: SourceDocument;
  name: string;
  env: ContainerEnvVar[];
}

/**
 * Values kept as configuration outside a container spec, each read like a container env
 * variable: the variables of an env file (`.env`), a ConfigMap's `data`, a Secret's `stringData`
 * and `data` (base64-decoded). Values of more than one line (a file kept in a ConfigMap) are not
 * env values and are left out.
 */
export interface ConfigValues {
  kind: "config-values";
  source: SourceDocument;
  /** `ContainerApp`: the inline `value`s of an Azure Container App's `properties.configuration.secrets`. */
  holder: "env-file" | "ConfigMap" | "Secret" | "ContainerApp";
  name: string;
  namespace: string | undefined;
  env: ContainerEnvVar[];
}

/** What the env rules read: a Kubernetes workload's containers, a compose service, an env file, a ConfigMap or Secret. */
export type EnvHolder = Workload | ComposeService | ConfigValues;

export interface KubernetesSecret {
  kind: "kubernetes-secret";
  source: SourceDocument;
  name: string;
  namespace: string | undefined;
  /** `placeholder`: the value is a template expression or placeholder (`{{ .Values.x | b64enc }}`), not data. */
  keys: { name: string; path: NodePath; placeholder: boolean }[];
}

/** micro/go-micro settings, from micro.yaml or env-style files, keys normalised (see docs). */
export interface MicroSettings {
  kind: "micro-settings";
  source: SourceDocument;
  /** normalised key → value and the path to locate it. */
  settings: Map<string, { value: string; path: NodePath }>;
}

/** A problem the component's own schema (src/config/) finds: the CA or sidecar would refuse the file. */
export interface SchemaIssue {
  path: NodePath;
  message: string;
}

export interface MeshwardCaConfig {
  kind: "meshward-ca";
  source: SourceDocument;
  config: Record<string, unknown>;
  schemaIssues: SchemaIssue[];
}

export interface MeshwardSidecarConfig {
  kind: "meshward-sidecar";
  source: SourceDocument;
  config: Record<string, unknown>;
  schemaIssues: SchemaIssue[];
}

/** Any scanned file, for rules that look at raw content (private keys). */
export interface RawFile {
  kind: "raw-file";
  file: string;
  text: string;
}

export type Resource =
  | DaprConfiguration
  | DaprComponent
  | DaprHttpEndpoint
  | Workload
  | ComposeService
  | ConfigValues
  | KubernetesSecret
  | MicroSettings
  | MeshwardCaConfig
  | MeshwardSidecarConfig
  | RawFile;

export type ResourceKind = Resource["kind"];

/** Everything loaded in one audit, for rules that look across resources. */
export interface Corpus {
  resources: readonly Resource[];
  configurations: readonly DaprConfiguration[];
}

/** What a rule reports: where (a node path in the resource's document) and what it saw. */
export interface Hit {
  path?: NodePath;
  /** Used instead of `path` for raw files. */
  position?: Position;
  evidence: string;
  /** Optional extra sentence specific to this hit. */
  detail?: string;
  /** Overrides the rule's severity for this hit (e.g. a loopback endpoint is low). */
  severity?: Severity;
}

export interface RuleExample {
  /** File name the example is audited under (matters for path-sensitive rules). */
  file: string;
  bad: string;
  good: string;
  /** A second file audited with the example (e.g. the policy file a sidecar config names). */
  companion?: { file: string; bad: string; good: string };
}

export interface Rule<K extends ResourceKind = ResourceKind> {
  id: string;
  family: string;
  severity: Severity;
  title: string;
  why: string;
  fix: string;
  example: RuleExample;
  appliesTo: readonly K[];
  /** Off unless asked for (`--enable ID` or `--enable all`): rules that fire on most workloads. */
  optIn?: boolean;
  /** When the rule itself reports some findings as low (completes "low when …" beside `severity` in the docs). */
  lowWhen?: string;
  check(resource: Extract<Resource, { kind: K }>, corpus: Corpus): Hit[];
}

export interface Finding {
  ruleId: string;
  severity: Severity;
  title: string;
  file: string;
  line: number;
  column: number;
  evidence: string;
  message: string;
  fix: string;
  /** Index of the YAML document inside the file (0 for single documents and raw files). */
  document: number;
}

/** A finding an ignore comment in its file covers (`meshward-audit-ignore RULE -- reason`). */
export interface SuppressedFinding extends Finding {
  suppression: { reason: string; /** Line of the ignore comment. */ line: number; scope: "line" | "file" };
}

/** An ignore comment that was not applied (unknown rule, no reason) or covers no finding. */
export interface IgnoreProblem {
  file: string;
  line: number;
  column: number;
  message: string;
}

/** `outside-root`: a symbolic link whose target is outside the folder being audited (not followed). */
export type SkipReason = "too-large" | "symlink-loop" | "unreadable" | "outside-root" | "not-config" | "not-regular";

export interface SkippedFile {
  file: string;
  reason: SkipReason;
  detail: string;
}

export interface ParseProblem {
  file: string;
  line: number;
  column: number;
  message: string;
  /**
   * `helm-template`: a chart template, reported once per file and not audited. `kustomize`: an
   * overlay folder that could not be rendered (its files were audited one by one).
   */
  kind?: "yaml" | "helm-template" | "kustomize";
}

export interface AuditResult {
  findings: Finding[];
  filesScanned: number;
  documentsScanned: number;
  resourcesAudited: number;
  /** kind (apiVersion/kind) → count of documents skipped because the audit has no rules for them. */
  unknownKinds: Record<string, number>;
  /** kind → the files (up to 3) holding documents of that kind, so the report says where they are. */
  unknownKindFiles: Record<string, string[]>;
  skipped: SkippedFile[];
  /** Binary files (a NUL byte) are counted, not listed. */
  binaryFiles: number;
  parseErrors: ParseProblem[];
  /** Findings covered by ignore comments: not in `findings`, never counted by --fail-on. */
  suppressed: SuppressedFinding[];
  ignoreProblems: IgnoreProblem[];
}
