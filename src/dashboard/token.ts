import { readFileSync } from "node:fs";
import { MeshwardError } from "../errors.ts";
import { checkStatusToken, statusTokenRequired } from "./routes.ts";

/**
 * The status page token from a file or MESHWARD_STATUS_TOKEN, checked (at least 16
 * characters) before anything starts. Required when the status port is not on loopback: the
 * page shows identities and refusals.
 */
export function resolveStatusToken(host: string, tokenFile: string | undefined): string | undefined {
  let token = process.env.MESHWARD_STATUS_TOKEN;
  if (tokenFile !== undefined) {
    try {
      token = readFileSync(tokenFile, "utf8").trim();
    } catch (error) {
      throw new MeshwardError("E_FILE_MISSING", `cannot read status token file ${tokenFile}: ${(error as NodeJS.ErrnoException).code ?? String(error)}`);
    }
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
