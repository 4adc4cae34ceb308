import { MeshwardError } from "../errors.ts";
import { redactConnectionString } from "./redact.ts";
import { openSqliteStore } from "./sqlite.ts";
import type { Store } from "./store.ts";

export type { CaFilesSnapshot, IssuanceFilter, IssuanceRecord, JoinTokenRecord, LeaderLock, RevocationRecord, Store, StoredCrl, TokenConsumption } from "./store.ts";
// PostgreSQL (./postgres.ts, with pg) is loaded by openStore() when a URL names it: a CLI command on
// a SQLite store does not pay for the driver (~0.06 s of CPU at each start). Import it from there.
export type { PostgresStoreOptions } from "./postgres.ts";
export { openSqliteStore, SqliteStore } from "./sqlite.ts";
export { redactConnectionString } from "./redact.ts";

export type StoreLocation = { readonly kind: "sqlite"; readonly path: string } | { readonly kind: "postgres"; readonly connectionString: string };

const SCHEME = /^([A-Za-z][A-Za-z0-9+.-]*):/;

/**
 * Reads a store URL: `sqlite:/path/ca.db`, `sqlite:///path/ca.db`, `sqlite::memory:` or a bare
 * path → SQLite; `postgres://…` / `postgresql://…` → PostgreSQL.
 */
export function parseStoreUrl(url: string): StoreLocation {
  const value = url.trim();
  if (value === "") throw invalid(url, "it is empty");
  const scheme = SCHEME.exec(value)?.[1]?.toLowerCase();
  const looksLikePath = value.startsWith("/") || value.startsWith(".") || scheme === undefined;
  if (looksLikePath) return { kind: "sqlite", path: value };
  const rest = value.slice(scheme.length + 1);
  if (scheme === "sqlite") {
    if (rest === "") throw invalid(url, "it names no file (write sqlite:/path/to/ca.db)");
    if (rest.startsWith("//")) {
      let parsed: URL;
      try {
        parsed = new URL(value);
      } catch {
        throw invalid(url, "it is not a valid URL (write sqlite:/path/to/ca.db)");
      }
      if (parsed.host !== "" && parsed.host !== "localhost") throw invalid(url, `SQLite files are local; remove the host "${parsed.host}" (write sqlite:/path/to/ca.db)`);
      const path = decodeURIComponent(parsed.pathname);
      if (path === "" || path === "/") throw invalid(url, "it names no file (write sqlite:/path/to/ca.db)");
      return { kind: "sqlite", path };
    }
    return { kind: "sqlite", path: rest };
  }
  if (scheme === "postgres" || scheme === "postgresql") {
    if (!rest.startsWith("//")) throw invalid(url, "write postgres://user@host:5432/database");
    try {
      new URL(value);
    } catch {
      throw invalid(url, "it is not a valid URL; percent-encode special characters in the user or password (e.g. @ as %40)");
    }
    return { kind: "postgres", connectionString: value };
  }
  throw invalid(url, `the scheme "${scheme}:" is not supported; use sqlite:/path/to/ca.db or postgres://user@host:5432/database`);
}

/**
 * Opens the store a URL names (no I/O for PostgreSQL until first use); call migrate() before use.
 * `caDirectory`: the CA directory it serves (SqliteStoreOptions.caDirectory; SQLite only).
 * The PostgreSQL driver is loaded here, the first time a postgres:// URL is opened.
 */
export async function openStore(url: string, options: { readonly caDirectory?: string } = {}): Promise<Store> {
  const location = parseStoreUrl(url);
  if (location.kind === "sqlite") return openSqliteStore(location.path, options);
  const { openPostgresStore } = await loadPostgres(url);
  return openPostgresStore({ connectionString: location.connectionString });
}

/** ./postgres.ts and pg; a driver that cannot be loaded is E_STORE_OPEN naming the store, password hidden. */
async function loadPostgres(url: string): Promise<typeof import("./postgres.ts")> {
  try {
    return await import("./postgres.ts");
  } catch (error) {
    throw new MeshwardError("E_STORE_OPEN", `cannot open ${redactConnectionString(url)}: the PostgreSQL driver (pg) could not be loaded: ${error instanceof Error ? error.message : String(error)}`, { cause: error });
  }
}

function invalid(url: string, why: string): MeshwardError {
  return new MeshwardError("E_STORE_URL_INVALID", `invalid store URL ${JSON.stringify(redactConnectionString(url))}: ${why}`);
}
