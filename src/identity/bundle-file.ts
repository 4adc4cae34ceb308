import { fileReadError, isMeshwardError, MeshwardError } from "../errors.ts";
import { certificatesFromPem } from "../pki/pem.ts";
import { INPUT_LIMITS, readInputText } from "../util/read-input.ts";

/** Reads a bootstrap trust bundle file: PEM holding at least one certificate; errors name the file. */
export function readBundleFile(file: string): string {
  let text: string;
  try {
    text = readInputText(file, { what: "trust bundle", maxBytes: INPUT_LIMITS.pem });
  } catch (error) {
    if (isMeshwardError(error)) throw error;
    throw fileReadError(`cannot read trust bundle ${file}`, error);
  }
  try {
    certificatesFromPem(text);
  } catch (error) {
    const why = isMeshwardError(error) ? error.message : String(error);
    throw new MeshwardError("E_BUNDLE_INVALID", `the trust bundle ${file} is not usable (${why}); pass the CA's bundle.pem (meshward ca init writes it, GET /v1/bundle serves it)`);
  }
  return text;
}
