import { createHash, randomBytes } from "node:crypto";

/** Join tokens are 32 random bytes; only their SHA-256 is stored. */
export const JOIN_TOKEN_PREFIX = "mwjt_";

export function generateJoinToken(): { token: string; id: string; hash: string } {
  const token = `${JOIN_TOKEN_PREFIX}${randomBytes(32).toString("base64url")}`;
  const hash = hashToken(token);
  return { token, id: hash.slice(0, 12), hash };
}

export function hashToken(token: string): string {
  return createHash("sha256").update(token, "utf8").digest("hex");
}
