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
  podSpec: Record<string, unknown>;
  podSpecPath: NodePath;
  env: ContainerEnvVar[];
}

export interface KubernetesSecret {
  kind: "kubernetes-secret";
  source: SourceDocument;
  name: string;
  namespace: string | undefined;
  keys: { name: string; path: NodePath }[];
}

/** micro/go-micro settings, from micro.yaml or env-style files, keys normalised (see docs). */
export interface MicroSettings {
  kind: "micro-settings";
  source: SourceDocument;
  /** normalised key → value and the path to locate it. */
  settings: Map<string, { value: string; path: NodePath }>;
}

export interface MeshwardCaConfig {
  kind: "meshward-ca";
  source: SourceDocument;
  config: Record<string, unknown>;
}

export interface MeshwardSidecarConfig {
  kind: "meshward-sidecar";
  source: SourceDocument;
  config: Record<string, unknown>;
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
  | Workload
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
}

export interface RuleExample {
  /** File name the example is audited under (matters for path-sensitive rules). */
  file: string;
  bad: string;
  good: string;
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
}

export type SkipReason = "binary" | "too-large" | "symlink-loop" | "unreadable" | "not-config";

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
}

export interface AuditResult {
  findings: Finding[];
  filesScanned: number;
  documentsScanned: number;
  resourcesAudited: number;
  /** kind (apiVersion/kind) → count of documents skipped because the audit has no rules for them. */
  unknownKinds: Record<string, number>;
  skipped: SkippedFile[];
  parseErrors: ParseProblem[];
}
