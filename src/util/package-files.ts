import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

let root: string | undefined;

/**
 * The meshward package's root folder, found by walking up from this module to the
 * package.json named "meshward". The same code runs from src/ (tsx), from dist/ (tsc) and
 * from the single-folder bundle (dist/bundle), so files the package ships (proto/, bin/,
 * package.json) are found by their place in the package, not relative to a module's depth.
 */
export function packageRoot(): string {
  if (root !== undefined) return root;
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const manifest = join(dir, "package.json");
    if (existsSync(manifest) && (JSON.parse(readFileSync(manifest, "utf8")) as { name?: unknown }).name === "meshward") return (root = dir);
    const parent = dirname(dir);
    if (parent === dir) throw new Error(`cannot find the meshward package.json above ${fileURLToPath(import.meta.url)}`);
    dir = parent;
  }
}

/** A file the package ships, by its path from the package root (e.g. "proto/sentry.proto"). */
export function packageFile(relative: string): string {
  return join(packageRoot(), relative);
}

/** The version in the package's package.json ("0.0.0" when it cannot be read). */
export function packageVersion(): string {
  try {
    const pkg = JSON.parse(readFileSync(packageFile("package.json"), "utf8")) as { version?: unknown };
    return typeof pkg.version === "string" ? pkg.version : "0.0.0";
  } catch {
    return "0.0.0";
  }
}
