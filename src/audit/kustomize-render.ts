import { execFileSync } from "node:child_process";
import { existsSync, readFileSync, statSync } from "node:fs";
import { join, relative, resolve, sep } from "node:path";
import { parse } from "yaml";
import { asArray, asText, isDict } from "./shape.ts";

/** The names kustomize accepts for a kustomization file, in the order it looks for them. */
const KUSTOMIZATION_FILES = ["kustomization.yaml", "kustomization.yml", "Kustomization"];

/** The kustomization file at the top of `path` when `path` is a folder that has one; else undefined. */
export function kustomizationIn(path: string): string | undefined {
  try {
    if (!statSync(path).isDirectory()) return undefined;
  } catch {
    return undefined;
  }
  const name = KUSTOMIZATION_FILES.find((each) => existsSync(join(path, each)));
  return name === undefined ? undefined : join(path, name);
}

export type RenderOutcome =
  | { ok: true; text: string }
  | { ok: false; reason: "no-kubectl" | "failed"; detail: string };

/** Longest a render may take (a remote base is fetched by kustomize itself). */
const RENDER_TIMEOUT_MS = 120_000;
const MAX_RENDERED_BYTES = 64 * 1024 * 1024;

/**
 * Renders a kustomize overlay with `kubectl kustomize DIR` (no cluster is contacted; a remote
 * base is fetched by kustomize). `kubectl` is the binary to run (default: `kubectl` on PATH).
 */
export function renderKustomization(directory: string, kubectl = "kubectl"): RenderOutcome {
  try {
    const text = execFileSync(kubectl, ["kustomize", directory], {
      encoding: "utf8",
      maxBuffer: MAX_RENDERED_BYTES,
      timeout: RENDER_TIMEOUT_MS,
      stdio: ["ignore", "pipe", "pipe"],
    });
    return { ok: true, text };
  } catch (error) {
    const failure = error as NodeJS.ErrnoException & { stderr?: string | Buffer };
    if (failure.code === "ENOENT") return { ok: false, reason: "no-kubectl", detail: `${kubectl} not found` };
    const stderr = String(failure.stderr ?? "").trim().split("\n").find((line) => line.trim() !== "");
    // kubectl logs through klog: `E1207 16:27:58.986032   25086 run.go:72] "command failed" err="…"`.
    const detail = stderr?.replace(/^[EWIF]\d{4} [\d:.]+\s+\d+ \S+\] /, "").replace(/^"command failed" err=/, "").replace(/^"(.*)"$/, "$1");
    return { ok: false, reason: "failed", detail: detail ?? failure.message.split("\n")[0] ?? String(error) };
  }
}

/**
 * Whether the kustomization in `directory` consumes `file` (a resource, patch, component or
 * generator file it names, or any file under a folder it names): such a file is audited in the
 * rendered output. Files it does not name (a sidecar config, an .env file kept beside it) are
 * audited as files.
 */
export function consumedBy(kustomization: string, directory: string): (file: string) => boolean {
  let doc: unknown;
  try {
    doc = parse(readFileSync(kustomization, "utf8"), { logLevel: "silent" });
  } catch {
    doc = undefined;
  }
  const named: string[] = [kustomization];
  const add = (value: unknown): void => {
    const text = asText(value).trim();
    // Remote resources and inline YAML text are not files of this folder.
    if (text === "" || /^[a-z]+:\/\/|^github\.com\/|^git@|\n/.test(text)) return;
    named.push(resolve(directory, text.replace(/^[^=]+=/, "")));
  };
  if (isDict(doc)) {
    for (const field of ["resources", "bases", "components", "crds", "patchesStrategicMerge", "configurations", "transformers", "generators", "validators"]) asArray(doc[field]).forEach(add);
    for (const field of ["patches", "patchesJson6902"]) asArray(doc[field]).forEach((entry) => isDict(entry) && add(entry["path"]));
    for (const field of ["configMapGenerator", "secretGenerator"]) {
      for (const generator of asArray(doc[field])) {
        if (!isDict(generator)) continue;
        asArray(generator["files"]).forEach(add);
        asArray(generator["envs"]).forEach(add);
        add(generator["env"]);
      }
    }
  }
  const roots = named.map((path) => resolve(path));
  return (file) => {
    const path = resolve(file);
    return roots.some((root) => path === root || (!relative(root, path).startsWith("..") && path.startsWith(root + sep)));
  };
}

/** The name findings in a rendered overlay are reported under: the overlay folder, then how it was rendered. */
export function renderedName(directory: string): string {
  return join(directory, "(kubectl kustomize)");
}

/** How to audit an overlay when it could not be rendered here. */
export function renderAdvice(directory: string): string {
  return `audit the rendered output instead: \`kubectl kustomize ${directory} | meshward audit -\``;
}
