/** Secrets that must never reach a log line, found in free text. */

const PEM_PRIVATE_KEY = /-----BEGIN ((?:[A-Z0-9]+ )*)PRIVATE KEY-----[\s\S]*?(?:-----END \1PRIVATE KEY-----|$)/g;
// Three base64url parts where the first starts like a JSON object ("{\"" → "eyJ").
const JWT = /\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*/g;
const BEARER = /\b(Bearer|Basic)\s+[A-Za-z0-9._~+/=-]{8,}/gi;

export const REDACTED = "[REDACTED]";

/**
 * Replaces PEM private key blocks (PKCS#8, encrypted PKCS#8, SEC1 "EC", PKCS#1 "RSA" — even
 * when truncated), JWT-looking strings and Authorization header values with markers.
 */
export function redactSecrets(text: string): string {
  if (typeof text !== "string" || text.length === 0) return text;
  let out = redactPrivateKeys(text);
  if (out.includes("eyJ")) out = out.replace(JWT, "[REDACTED JWT]");
  if (/bearer|basic/i.test(out)) out = out.replace(BEARER, (_match, scheme: string) => `${scheme} ${REDACTED}`);
  return out;
}

/** Replaces PEM private key blocks (any of the forms above, even truncated) with a marker. */
export function redactPrivateKeys(text: string, marker = "[REDACTED PRIVATE KEY]"): string {
  return text.includes("PRIVATE KEY-----") ? text.replace(PEM_PRIVATE_KEY, marker) : text;
}

/** Object keys whose values are secrets wherever they appear (pino redact paths). */
export const SECRET_KEYS = [
  "key",
  "privateKey",
  "private_key",
  "keyPem",
  "token",
  "joinToken",
  "accessToken",
  "jwt",
  "passphrase",
  "password",
  "secret",
  "authorization",
  "Authorization",
] as const;

export function redactPaths(): string[] {
  const paths: string[] = [];
  for (const key of SECRET_KEYS) paths.push(key, `*.${key}`);
  paths.push("headers.authorization", "req.headers.authorization", "*.headers.authorization", "headers.cookie", "req.headers.cookie");
  return paths;
}
