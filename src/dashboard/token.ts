import { fileReadError, MeshwardError } from "../errors.ts";
import { assertPrivateFile } from "../util/files.ts";
import { INPUT_LIMITS, readInputText } from "../util/read-input.ts";
import { checkStatusToken, statusTokenRequired } from "./routes.ts";

/**
 * The status page token from a file or MESHWARD_STATUS_TOKEN, checked (at least 16
 * characters) before anything starts; the file is held to the key files' rule (E_KEY_PERMISSIONS). Required when the status port is not on loopback: the
 * page shows identities and refusals.
 */
export function resolveStatusToken(host: string, tokenFile: string | undefined): string | undefined {
  let token = process.env.MESHWARD_STATUS_TOKEN;
  if (tokenFile !== undefined) {
    try {
      token = readInputText(tokenFile, { what: "status token file", maxBytes: INPUT_LIMITS.secret }).trim();
    } catch (error) {
      if (error instanceof MeshwardError) throw error;
      throw fileReadError(`cannot read status token file ${tokenFile}`, error);
    }
    // Whoever reads it can open the status page: held to the key files' rule (owner only, or a Kubernetes Secret with fsGroup).
    assertPrivateFile(tokenFile, "status token file");
  }
  if (statusTokenRequired(host) && (token === undefined || token === "")) {
    throw new MeshwardError(
      "E_STATUS_TOKEN_REQUIRED",
      `the status port ${host} is not on loopback, so its page needs a token: --status-token-file FILE or MESHWARD_STATUS_TOKEN (generate one with 'openssl rand -hex 32')`,
    );
  }
  if (token === undefined || token === "") return undefined;
  checkStatusToken(token);
  return token;
}
