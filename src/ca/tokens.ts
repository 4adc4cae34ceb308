import { createHash, randomBytes } from "node:crypto";
import type { Store } from "../store/store.ts";

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

export interface JoinTokenRequest {
  readonly spiffeId: string;
  /** How long the token may be used. */
  readonly ttlMs: number;
  /** How many certificates it may obtain (default 1). */
  readonly uses?: number;
  readonly dnsNames?: readonly string[];
  /** Certificates obtained with the token carry CN = this (the app id; see JoinTokenRecord.commonName). */
  readonly commonName?: string;
  readonly now?: Date;
}

/** Creates a join token in the store (only its hash is kept) and returns the secret once. */
export async function issueJoinToken(store: Pick<Store, "createToken">, request: JoinTokenRequest): Promise<{ token: string; id: string; expiresAt: Date }> {
  const { token, id, hash } = generateJoinToken();
  const now = request.now ?? new Date();
  const expiresAt = new Date(now.getTime() + request.ttlMs);
  const uses = request.uses ?? 1;
  await store.createToken({ id, tokenHash: hash, spiffeId: request.spiffeId, dnsNames: [...(request.dnsNames ?? [])], createdAt: now, expiresAt, usesAllowed: uses, usesLeft: uses, ...(request.commonName !== undefined ? { commonName: request.commonName } : {}) });
  return { token, id, expiresAt };
}
