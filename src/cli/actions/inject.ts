// What `meshward inject` does; what it accepts (its flags, its help) is ../inject.ts.
import { readFileSync } from "node:fs";
import { fileReadError, MeshwardError } from "../../errors.ts";
import { INPUT_LIMITS, readInputText } from "../../util/read-input.ts";
import { readBundleFile } from "../../identity/bundle-file.ts";
import { injectManifest } from "../../inject/manifest.ts";
import type { InjectOptions } from "../../inject/settings.ts";

export interface InjectCommandOptions {
  trustAnchors: string;
  image: string;
  caAddress: string;
  audience: string;
  quiet?: boolean;
}

export function injectOptionsFrom(opts: { trustAnchors: string; image: string; caAddress: string; audience: string }): InjectOptions {
  return { trustAnchors: readBundleFile(opts.trustAnchors), image: opts.image, caAddress: opts.caAddress, audience: opts.audience };
}

/** `meshward inject`: the manifests with the sidecar added, on stdout. */
export function runInject(file: string, opts: InjectCommandOptions): void {
  const options = injectOptionsFrom(opts);
  let text: string;
  try {
    text = file === "-" ? readFileSync(0, "utf8") : readInputText(file, { what: "manifest file", maxBytes: INPUT_LIMITS.config * 16 });
  } catch (error) {
    if (error instanceof MeshwardError) throw error;
    throw fileReadError(`cannot read ${file === "-" ? "stdin" : file}`, error);
  }
  const result = injectManifest(text, options, file === "-" ? "stdin" : file);
  process.stdout.write(result.text);
  if (opts.quiet !== true) {
    for (const note of result.notes) process.stderr.write(`note: ${note}\n`);
    process.stderr.write(`injected ${result.injected.length} pod template${result.injected.length === 1 ? "" : "s"}${result.injected.length > 0 ? `: ${result.injected.join(", ")}` : ""}\n`);
  }
}
