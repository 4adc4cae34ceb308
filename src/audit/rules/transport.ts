import type { ComponentMetadataItem, ContainerEnvVar, DaprComponent, EnvHolder, Hit, NodePath, Rule, Severity } from "../types.ts";
import { asText, get, isDict, isFalsy, isTruthy } from "../shape.ts";
import { componentYaml, secretRefYaml } from "./example-builders.ts";
import { componentFamily, connectionParam, defineRule, hostOf, isLoopbackComponent, isLoopbackHost, isPlaceholder, metadataItem, redactConnectionString, typePath, urlScheme } from "./helpers.ts";
import { hostsIn, stackExchangeRedis } from "../values.ts";

/** The inline connection string, unless it is wholly a substitution or a placeholder. */
function connectionString(component: DaprComponent): ComponentMetadataItem | undefined {
  const item = metadataItem(component, "connectionString", "url", "dsn", "connection");
  return item?.hasInlineValue === true && !isPlaceholder(item.value) ? item : undefined;
}

/** Settings whose value is a URL used as a name, never connected to (`oidcAudience: http://…`). */
const IDENTIFIER_NAME = /(audiences?|aud|scopes?|namespace|schema|identifier|resource.?id)$/i;

/** Env variables that name a telemetry exporter's endpoint (OpenTelemetry SDK variables, Zipkin, Jaeger). */
const TELEMETRY_EXPORTER_NAME = /^OTEL_EXPORTER_[A-Z0-9_]*ENDPOINT$|ZIPKIN|JAEGER|(^|_)TRAC(ING|ES?)_(ENDPOINT|URL|COLLECTOR)/i;

/** `low` for a loopback URL, else the rule's own severity. */
function urlSeverity(url: string): Severity | undefined {
  return isLoopbackHost(hostOf(url)) ? "low" : undefined;
}

/**
 * A hit on a container env URL: lowered to low (and said so) when the URL's host is on
 * loopback, as the runner does for components whose every address is. `severity` is the
 * hit's own severity otherwise (undefined: the rule's).
 */
function envHit(url: string, hit: Hit): Hit {
  if (urlSeverity(url) !== "low") return hit;
  return { ...hit, severity: "low", detail: [hit.detail, "Lowered to low: the URL's host is on loopback."].filter((part) => part !== undefined).join(" ") };
}

/** A switch that turns TLS off in a component (the families with their own rule are left to it). */
function tlsOffSwitch(component: DaprComponent, item: ComponentMetadataItem): boolean {
  if (!item.hasInlineValue) return false;
  const family = componentFamily(component);
  if (/^(disable.?(ssl|tls)|use.?plain.?text(.?connection)?|plain.?text|insecure.?connection)$/i.test(item.name)) {
    return isTruthy(item.value) && !(family === "kafka" && /^disable.?tls$/i.test(item.name));
  }
  if (/^(tls.?enabled?|enable.?tls|use.?tls|ssl.?enabled?|enable.?ssl|use.?ssl|ssl|tls)$/i.test(item.name)) {
    // Pulsar's enableTLS decides the certificate check, not TLS itself: pulsarTransport judges it.
    return isFalsy(item.value) && family !== "redis" && family !== "pulsar";
  }
  return false;
}

/**
 * What Dapr's Pulsar components (pubsub.pulsar, bindings.pulsar) do with `host` and `enableTLS`.
 * dapr/components-contrib pubsub/pulsar/pulsar.go (and bindings/pulsar/pulsar.go): `sanitiseURL`
 * keeps a host that starts with `pulsar+ssl://`, `pulsar://`, `http://` or `https://` and puts
 * `pulsar://` before any other; the client is built with `TLSAllowInsecureConnection: !enableTLS`
 * and nothing else about TLS (no CA file, no `TLSValidateHostname`). apache/pulsar-client-go
 * pulsar/client_impl.go uses TLS for `pulsar+ssl://` and `https://` only. So the scheme alone
 * decides TLS, and `enableTLS` only whether the certificate is checked:
 * - no scheme (whatever enableTLS says): plaintext (MW-TLS-011); `pulsar://`, `http://`: MW-TLS-007;
 * - `pulsar+ssl://`, `https://` without `enableTLS: "true"`: TLS accepting any certificate (MW-TLS-009);
 * - `pulsar+ssl://`, `https://` with `enableTLS: "true"`: verified TLS.
 * Settings the components do not read (`tlsAllowInsecureConnection`, `tlsValidateHostname`) change nothing.
 */
function pulsarTransport(component: DaprComponent): { verdict: "plaintext" | "unverified"; hit: Hit } | undefined {
  if (componentFamily(component) !== "pulsar") return undefined;
  const host = metadataItem(component, "host");
  if (host === undefined || !host.hasInlineValue || isPlaceholder(host.value)) return undefined;
  const enable = metadataItem(component, "enableTLS");
  const scheme = urlScheme(host.value);
  if (scheme === "") {
    const said = enable === undefined ? "without enableTLS" : enable.hasInlineValue ? `enableTLS: "${enable.value.trim()}"` : "enableTLS from a secret";
    return { verdict: "plaintext", hit: hit(host, `${component.type} host ${host.value.trim()} has no scheme: dialled as pulsar://, plaintext (${said}; enableTLS never turns TLS on)`) };
  }
  if (scheme !== "pulsar+ssl" && scheme !== "https") return undefined;
  const where = `${scheme}://${hostOf(host.value)}`;
  if (enable === undefined) return { verdict: "unverified", hit: hit(host, `${where} without enableTLS: "true" (Dapr sets TLSAllowInsecureConnection: any certificate accepted)`) };
  if (!enable.hasInlineValue || isTruthy(enable.value)) return undefined;
  return { verdict: "unverified", hit: hit(enable, `enableTLS: "${enable.value.trim()}" with ${where} (Dapr sets TLSAllowInsecureConnection: any certificate accepted)`) };
}

function isPostgres(component: DaprComponent): boolean {
  return /postgres|cockroach|yugabyte/.test(componentFamily(component));
}

function isMysql(component: DaprComponent): boolean {
  return /^mysql|mariadb/.test(componentFamily(component));
}

/** A PostgreSQL connection and its sslmode ("" when not set), with where to report it. */
interface PostgresConnection {
  path: NodePath;
  mode: string;
  /** Prefix of the evidence (`DATABASE_URL: `) and severity, for container env values. */
  label: string;
  where?: string;
  /** The URL, for container env values (a loopback one lowers the finding). */
  url?: string;
  /** What the connection says, when sslmode alone would misstate it (a JDBC driver's own default or factory). */
  said?: string;
}

/**
 * The component's connection and sslmode: its inline connection string, or, with no connection
 * string at all, its individual `host`/`hostaddr` fields (Dapr's postgres components take `host`,
 * `hostaddr`, `port`, `database`, `user`, `password`, `sslRootCert`; no sslmode among them, so
 * libpq's default `prefer` applies). A socket path as `host` is not network traffic.
 */
function postgresSslMode(component: DaprComponent): PostgresConnection | undefined {
  const item = connectionString(component);
  if (item !== undefined) {
    if (isPostgresSocketOnly(item.value)) return undefined;
    return { path: item.path, mode: (connectionParam(item.value, "sslmode") ?? "").toLowerCase(), label: "" };
  }
  // A connection string from a secret (or a placeholder) may carry the sslmode: not judged.
  if (metadataItem(component, "connectionString", "url", "dsn", "connection") !== undefined) return undefined;
  const host = metadataItem(component, "hostaddr") ?? metadataItem(component, "host");
  if (host === undefined || (host.hasInlineValue && isPlaceholder(host.value))) return undefined;
  if (host.name.toLowerCase() === "host" && host.hasInlineValue && isPostgresSocketOnly(`host=${host.value}`)) return undefined;
  return { path: host.path, mode: "", label: "", where: host.hasInlineValue ? ` (${host.name}: ${host.value.trim()})` : ` (${host.name} from a secret)` };
}

/**
 * Container env values that are URLs (`DATABASE_URL=postgres://…`), not placeholders. `MICRO_*`
 * variables are left to the micro rules, proxy settings (`HTTP_PROXY`: HTTPS goes through
 * them in a CONNECT tunnel) and identifiers (`*_AUDIENCE`) are not connected to in plaintext.
 */
function envUrls(workload: EnvHolder): (ContainerEnvVar & { scheme: string; jdbc: boolean })[] {
  return workload.env
    .filter((entry) => entry.hasInlineValue && !isPlaceholder(entry.value) && !/^MICRO_/i.test(entry.name)
      && !/(^|_)(https?|all|ftp|no)_proxy$/i.test(entry.name) && !IDENTIFIER_NAME.test(entry.name) && !isListenAddress(entry))
    .map((entry) => {
      const value = withoutJdbc(entry.value);
      return { ...entry, value, scheme: urlScheme(value), jdbc: value !== entry.value };
    })
    .filter((entry) => entry.scheme !== "");
}

/**
 * A host an app binds to, never one anything connects to: `+`, `*` (Kestrel), `0.0.0.0`, `::`, `[::]`.
 * An empty host is not one: `postgresql:///orders` takes its host from `?host=` or PGHOST.
 */
function isBindWildcard(host: string): boolean {
  const text = host.trim();
  const bare = text.startsWith("[") ? text.slice(1, text.indexOf("]") < 0 ? undefined : text.indexOf("]"))
    : (text.match(/:/g) ?? []).length > 1 ? text : text.replace(/:\d*$/, "");
  return ["+", "*", "0.0.0.0", "::"].includes(bare);
}

/**
 * An env value that is an address the app listens on (M1 of review-auditprec), not an endpoint:
 * ASP.NET Core's `ASPNETCORE_URLS`/`DOTNET_URLS`/`URLS` and Kestrel's `Kestrel__Endpoints__*__Url`
 * whatever their host (a `;`-list of URLs), a variable named `*LISTEN*`/`*BIND*` with a wildcard or
 * loopback host, and any URL whose every host is a bind wildcard (`http://0.0.0.0:8080`, `http://[::]:18889`).
 */
function isListenAddress(entry: ContainerEnvVar): boolean {
  if (/^((ASPNETCORE|DOTNET)_)?URLS$/i.test(entry.name) || /^Kestrel__Endpoints__.+__Url$/i.test(entry.name)) return true;
  const hosts = entry.value.split(";").map((part) => part.trim()).filter((part) => part !== "").map(hostOf);
  if (hosts.length === 0 || hosts.includes("")) return false;
  if (hosts.every(isBindWildcard)) return true;
  return /(LISTEN|BIND)/i.test(entry.name) && hosts.every((host) => isBindWildcard(host) || isLoopbackHost(host));
}

/**
 * A JDBC URL (`jdbc:postgresql://db:5432/orders?sslmode=require`, Spring's
 * `SPRING_DATASOURCE_URL`) as the URL its driver reads (`postgresql://…`), else the value as is.
 */
export function withoutJdbc(value: string): string {
  const text = value.trim();
  return /^jdbc:[a-z][a-z0-9+.-]*:\/\//i.test(text) ? text.slice("jdbc:".length) : value;
}

/**
 * MySQL connections in container env: `mysql://`, `mysql+pymysql://`, `mariadb://` URLs and Go
 * driver DSNs (`user:pass@tcp(db:3306)/orders?tls=true`), which have no scheme.
 */
function envMysqlConnections(workload: EnvHolder): (ContainerEnvVar & { dsn: boolean; jdbc: boolean })[] {
  return workload.env
    .filter((entry) => entry.hasInlineValue && !isPlaceholder(entry.value) && !/^MICRO_/i.test(entry.name) && !IDENTIFIER_NAME.test(entry.name))
    .map((entry) => {
      const value = withoutJdbc(entry.value);
      return { ...entry, value, jdbc: value !== entry.value, dsn: /^[^\s/@]*@(?:tcp|unix)\(/i.test(value.trim()) };
    })
    .filter((entry) => entry.dsn || /^(mysql|mariadb)(\+[a-z0-9]+)?$/.test(urlScheme(entry.value)));
}

/**
 * What a MySQL URL or DSN says about TLS: undefined when it asks for verified TLS (the Go
 * driver's `tls=true`/`custom`/a registered config name, `ssl-mode=VERIFY_CA|VERIFY_IDENTITY`,
 * `ssl=true` or a JSON `ssl` object (mysql2), Prisma's `sslaccept=strict`, a CA file
 * (`ssl_ca`, `ssl-ca`, `sslca`)), else the evidence: the setting that turns it off or leaves it
 * unverified, or that none is given (the drivers then connect in plaintext or unverified).
 */
function mysqlUrlTls(value: string): string | undefined {
  const setting = (name: string): string | undefined => connectionParam(value, name)?.trim();
  const tls = setting("tls");
  if (tls !== undefined) return /^(false|preferred|skip-verify|0)$/i.test(tls) ? `tls=${tls}` : undefined;
  for (const name of ["ssl-mode", "ssl_mode", "sslmode"]) {
    const mode = setting(name);
    if (mode !== undefined) return /^verify[-_](ca|identity|full)$/i.test(mode) ? undefined : `${name}=${mode}`;
  }
  // MySQL Connector/J's legacy switches: useSSL=true verifies the server only with verifyServerCertificate=true.
  const useSsl = setting("useSSL");
  if (useSsl !== undefined) {
    if (!isTruthy(useSsl)) return `useSSL=${useSsl}`;
    const verify = setting("verifyServerCertificate");
    return verify !== undefined && isTruthy(verify) ? undefined : `useSSL=${useSsl} without verifyServerCertificate=true`;
  }
  const accept = setting("sslaccept");
  if (accept !== undefined) return accept.toLowerCase() === "strict" ? undefined : `sslaccept=${accept}`;
  const ssl = setting("ssl");
  if (ssl !== undefined) return isTruthy(ssl) || ssl.startsWith("{") || ssl.startsWith("%7B") ? undefined : `ssl=${ssl}`;
  if (["ssl_ca", "ssl-ca", "sslca", "sslrootcert"].some((name) => setting(name) !== undefined)) return undefined;
  return "no TLS setting";
}

/** The other env variables of the container an env entry belongs to (path `…containers, i, env, j, value`; a compose service is one container). */
function containerEnv(workload: EnvHolder, entry: ContainerEnvVar): ContainerEnvVar[] {
  if (workload.kind !== "workload") return workload.env;
  const container = JSON.stringify(entry.path.slice(0, -3));
  return workload.env.filter((other) => JSON.stringify(other.path.slice(0, -3)) === container);
}

/** libpq's connection keywords (postgresql.org/docs/current/libpq-connect.html, "Parameter Key Words"). */
const LIBPQ_KEYWORDS = new Set([
  "host", "hostaddr", "port", "dbname", "user", "password", "passfile", "require_auth", "channel_binding", "connect_timeout",
  "client_encoding", "options", "application_name", "fallback_application_name", "keepalives", "keepalives_idle",
  "keepalives_interval", "keepalives_count", "tcp_user_timeout", "replication", "gssencmode", "sslmode", "requiressl",
  "sslnegotiation", "sslcompression", "sslcert", "sslkey", "sslkeylogfile", "sslpassword", "sslcertmode", "sslrootcert", "sslcrl", "sslcrldir",
  "sslsni", "requirepeer", "ssl_min_protocol_version", "ssl_max_protocol_version", "krbsrvname", "gsslib", "gssdelegation",
  "service", "target_session_attrs", "load_balance_hosts", "min_protocol_version", "max_protocol_version",
  // pgx's own keywords in the same string (pool settings, statement cache).
  "pool_max_conns", "pool_min_conns", "pool_max_conn_lifetime", "pool_max_conn_idle_time", "pool_health_check_period",
  "statement_cache_capacity", "description_cache_capacity", "default_query_exec_mode",
]);

/**
 * The keywords of a libpq keyword/value string (`host=pg.db.svc port=5432 dbname=orders sslmode=disable`,
 * as libpq, Go's pgx and lib/pq, and psycopg take it), or undefined when the value is not one: every
 * token must be `keyword=value` (a value may be single-quoted) with a libpq keyword, `host` or
 * `hostaddr` among them, and `dbname`, `user` or `sslmode` beside it (`host=x` alone says nothing).
 */
export function libpqKeywords(value: string): Map<string, string> | undefined {
  const text = value.trim();
  if (text === "" || text.includes(";") || /^[a-z][a-z0-9+.-]*:\/\//i.test(text)) return undefined;
  const token = /\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*('(?:[^'\\]|\\.)*'|(?:[^\s'\\]|\\.)*)/y;
  const keywords = new Map<string, string>();
  let index = 0;
  while (index < text.length) {
    token.lastIndex = index;
    const match = token.exec(text);
    if (match === null || match[0].length === 0) return undefined;
    const key = (match[1] ?? "").toLowerCase();
    if (!LIBPQ_KEYWORDS.has(key)) return undefined;
    keywords.set(key, (match[2] ?? "").replace(/^'|'$/g, ""));
    index = token.lastIndex;
    while (index < text.length && /\s/.test(text[index] ?? "")) index += 1;
  }
  if (!keywords.has("host") && !keywords.has("hostaddr")) return undefined;
  return ["dbname", "user", "sslmode"].some((key) => keywords.has(key)) ? keywords : undefined;
}

/** Npgsql's SslMode values only Npgsql has (MySQL's .NET connectors say None, Preferred, Required). */
const NPGSQL_ONLY_MODE = /^(disable|allow|prefer|require)$/i;

/**
 * An Npgsql connection string (`Host=pg.db.svc;Port=5432;Database=orders;Username=app;SSL Mode=Require`;
 * npgsql.org/doc/connection-string-parameters: `keyword=value;` pairs, case-insensitive, `SSL Mode`
 * default `Prefer`), or undefined. It must name a `Host`/`Server` and be recognisably PostgreSQL: an
 * SSL Mode value only Npgsql takes, port 5432, or a variable name saying PostgreSQL (so MySQL
 * Connector/NET's `Server=…;SslMode=VerifyFull` is not read). `mode` is libpq's spelling (`verify-full`).
 */
export function npgsqlConnection(value: string, name = ""): { host: string; hostKey: string; mode: string; modeKey: string; modeValue: string } | undefined {
  const text = value.trim();
  if (!text.includes(";") || /^[a-z][a-z0-9+.-]*:\/\//i.test(text) || isSqlServerKeywordString(text, name)) return undefined;
  const pairs = new Map<string, { key: string; value: string }>();
  for (const part of text.split(";")) {
    if (part.trim() === "") continue;
    const equals = part.indexOf("=");
    if (equals <= 0) return undefined;
    const key = part.slice(0, equals).trim();
    pairs.set(key.toLowerCase().replace(/\s+/g, ""), { key, value: part.slice(equals + 1).trim().replace(/^"|"$/g, "") });
  }
  const host = pairs.get("host") ?? pairs.get("server");
  if (host === undefined || host.value === "") return undefined;
  const mode = pairs.get("sslmode");
  const postgres = (mode !== undefined && NPGSQL_ONLY_MODE.test(mode.value)) || pairs.get("port")?.value === "5432" || /(postgres|pgsql|npgsql|(^|_)pg(_|$))/i.test(name);
  if (!postgres) return undefined;
  const libpq = (mode?.value ?? "").toLowerCase().replace(/^verify(ca|full)$/, "verify-$1");
  return { host: host.value, hostKey: host.key, mode: libpq, modeKey: mode?.key ?? "", modeValue: mode?.value ?? "" };
}

/**
 * `postgres://` / `postgresql://` URLs (also `jdbc:postgresql://`) in container env; libpq's
 * `PGSSLMODE` in the same container counts when the URL sets no sslmode. A container with no
 * such URL that sets `PGHOST` (a network host) and a `PGSSLMODE` connects with that mode (libpq
 * reads both); with no PGSSLMODE the app may set sslmode in its code, so that is not judged.
 */
function envPostgresConnections(workload: EnvHolder): PostgresConnection[] {
  const urls = envUrls(workload).filter((entry) => entry.scheme === "postgres" || entry.scheme === "postgresql");
  const keywordStrings = envPostgresKeywordStrings(workload);
  const containers = new Set([...urls.filter((entry) => !entry.jdbc), ...keywordStrings].map((entry) => JSON.stringify(entry.path.slice(0, -3))));
  const bare = workload.env.filter((entry) => entry.name === "PGSSLMODE" && entry.hasInlineValue && !isPlaceholder(entry.value)
    && !containers.has(JSON.stringify(entry.path.slice(0, -3)))).flatMap((entry): PostgresConnection[] => {
    const host = containerEnv(workload, entry).find((other) => other.name === "PGHOST" && other.hasInlineValue && !isPlaceholder(other.value));
    if (host === undefined || isPostgresSocketOnly(`host=${host.value.trim()}`)) return [];
    return [{ path: entry.path, mode: entry.value.trim().toLowerCase(), label: "", said: `PGSSLMODE=${entry.value.trim()}`, where: ` (PGHOST: ${host.value.trim()})`, url: `postgres://${host.value.trim()}` }];
  });
  return [...bare, ...keywordStrings.map((entry) => entry.connection), ...urls.flatMap((entry) => {
    const pgHost = containerEnv(workload, entry).find((other) => other.name === "PGHOST" && other.hasInlineValue)?.value ?? "";
    if (isPostgresSocketOnly(entry.value, pgHost)) return [];
    // The PostgreSQL JDBC driver reads no PGSSLMODE; its `ssl=true` without sslmode means verify-full,
    // and its NonValidatingFactory accepts any certificate whatever sslmode says.
    const fromEnv = entry.jdbc ? "" : containerEnv(workload, entry).find((other) => other.name === "PGSSLMODE" && other.hasInlineValue)?.value ?? "";
    const jdbcDefault = entry.jdbc && isTruthy(connectionParam(entry.value, "ssl") ?? "") ? "verify-full" : "";
    const explicit = connectionParam(entry.value, "sslmode");
    let mode = (explicit ?? (fromEnv || jdbcDefault)).trim().toLowerCase();
    let said = entry.jdbc && mode === "" ? "sslmode not set (PostgreSQL JDBC default: prefer)" : undefined;
    if (entry.jdbc && /NonValidatingFactory$/.test(connectionParam(entry.value, "sslfactory") ?? "") && mode !== "" && !["disable", "allow", "prefer"].includes(mode)) {
      said = `${explicit === undefined ? "ssl=true" : `sslmode=${mode}`} with sslfactory=NonValidatingFactory (no certificate check)`;
      mode = "require";
    }
    // The address dialled decides loopback: libpq's `?hostaddr=`, then `?host=`, override the URL's host.
    const dialledKey = entry.jdbc ? undefined : ["hostaddr", "host"].find((key) => (connectionParam(entry.value, key) ?? "") !== "");
    const dialled = dialledKey === undefined ? undefined : connectionParam(entry.value, dialledKey);
    const shown = `${entry.jdbc ? "jdbc:" : ""}${entry.scheme}://${hostOf(entry.value)}${dialled === undefined ? "" : `, ${dialledKey}=${dialled}`}`;
    const url = dialled === undefined ? entry.value : `postgres://${dialled.split(",")[0] ?? ""}`;
    return [{ path: entry.path, mode, label: `${entry.name}: `, where: ` (${shown})`, url, ...(said === undefined ? {} : { said }) }];
  })];
}

/**
 * libpq keyword strings and Npgsql strings in env (H4 of review-auditprec): judged like URLs, with
 * `PGSSLMODE` of the same container when the string sets no mode (libpq and Npgsql both read it).
 */
function envPostgresKeywordStrings(workload: EnvHolder): (ContainerEnvVar & { connection: PostgresConnection })[] {
  return workload.env
    .filter((entry) => entry.hasInlineValue && !isPlaceholder(entry.value) && !/^MICRO_/i.test(entry.name) && !IDENTIFIER_NAME.test(entry.name))
    .flatMap((entry): (ContainerEnvVar & { connection: PostgresConnection })[] => {
      const fromEnv = containerEnv(workload, entry).find((other) => other.name === "PGSSLMODE" && other.hasInlineValue && !isPlaceholder(other.value))?.value.trim();
      const keywords = libpqKeywords(entry.value);
      if (keywords !== undefined) {
        if (isPostgresSocketOnly(entry.value)) return [];
        // Without sslmode, only a string that is recognisably PostgreSQL (`dbname` is libpq's word) is judged.
        const recognisable = keywords.has("sslmode") || keywords.has("dbname") || keywords.get("port") === "5432" || /(postgres|pgsql|(^|_)pg(_|$))/i.test(entry.name);
        if (!recognisable) return [];
        const host = keywords.get("hostaddr") ?? keywords.get("host") ?? "";
        const explicit = keywords.get("sslmode");
        const mode = (explicit ?? fromEnv ?? "").toLowerCase();
        const said = explicit === undefined && fromEnv !== undefined ? `PGSSLMODE=${fromEnv}` : undefined;
        const where = ` (${keywords.has("hostaddr") ? "hostaddr" : "host"}=${host})`;
        return [{ ...entry, connection: { path: entry.path, mode, label: `${entry.name}: `, where, url: `postgres://${host.split(",")[0] ?? ""}`, ...(said === undefined ? {} : { said }) } }];
      }
      const npgsql = npgsqlConnection(entry.value, entry.name);
      if (npgsql === undefined || npgsql.host.startsWith("/") || isPlaceholder(npgsql.host)) return [];
      const mode = npgsql.mode || (fromEnv ?? "").toLowerCase();
      const said = npgsql.modeKey !== "" ? `${npgsql.modeKey}=${npgsql.modeValue}`
        : fromEnv !== undefined ? `PGSSLMODE=${fromEnv}` : "SSL Mode not set (Npgsql default: Prefer)";
      const connection: PostgresConnection = { path: entry.path, mode: mode === "" ? "prefer" : mode, label: `${entry.name}: `, said, where: ` (${npgsql.hostKey}=${npgsql.host})`, url: `postgres://${npgsql.host.split(",")[0] ?? ""}` };
      return [{ ...entry, connection }];
    });
}

/**
 * True when a PostgreSQL connection string names only Unix-domain sockets: every `host`
 * (keyword, URL query or URL host, percent-decoded) is a path (`/cloudsql/proj:region:db`,
 * `/var/run/postgresql`) or an abstract socket (`@name`), and no `hostaddr` is given. libpq
 * uses no TLS on a socket and the traffic never leaves the machine, so sslmode says nothing.
 * `pgHost` is `PGHOST` of the same container, used when the string names no host.
 */
export function isPostgresSocketOnly(value: string, pgHost = ""): boolean {
  if (connectionParam(value, "hostaddr") !== undefined) return false;
  const decode = (text: string): string => {
    try {
      return decodeURIComponent(text);
    } catch {
      return text;
    }
  };
  const named = connectionParam(value, "host") ?? (urlScheme(value) === "" ? "" : hostOf(value));
  const hosts = (named === "" ? pgHost : named).split(",").map((host) => decode(host.trim())).filter((host) => host !== "");
  return hosts.length > 0 && hosts.every((host) => host.startsWith("/") || host.startsWith("@"));
}

function postgresConnections(resource: DaprComponent | EnvHolder): PostgresConnection[] {
  if (resource.kind !== "dapr-component") return envPostgresConnections(resource);
  if (!isPostgres(resource)) return [];
  const connection = postgresSslMode(resource);
  return connection === undefined ? [] : [connection];
}

function postgresHit(connection: PostgresConnection, evidence: string): Hit {
  const found: Hit = { path: connection.path, evidence: `${connection.label}${connection.said ?? evidence}${connection.where ?? ""}` };
  return connection.url === undefined ? found : envHit(connection.url, found);
}

/** Lettuce's URL schemes with TLS (RedisURI: rediss, redis+ssl, redis+tls with StartTLS, rediss-sentinel). */
const LETTUCE_TLS_SCHEMES: readonly string[] = ["rediss", "redis+ssl", "redis+tls", "rediss-sentinel"];

/**
 * Connection-string options that turn certificate or host name checks off, wherever they are
 * written (`params: "?tls=true&tlsInsecure=true"`, a `host` or connection string, an env URL):
 * MongoDB's `tlsInsecure`/`tlsAllowInvalid*` (true), go-redis's `skip_verify` (true), and redis-py's / Celery's `ssl_cert_reqs`
 * (`none`, `CERT_NONE`: redis/connection.py SSLConnection maps "none" to ssl.CERT_NONE) and
 * `ssl_check_hostname` (false), and Lettuce's `verifyPeer` (NONE, or false; CA) on a Redis TLS URL.
 * `hostnameOnly`: only the host name check is off (the certificate must still chain to a trusted
 * CA). `schemes`: read only in URLs of these schemes (the option means nothing without TLS).
 */
/**
 * The verifyPeer value Lettuce applies for a URL, or undefined when it sets none. Lettuce
 * RedisURI.buildRedisUriFromUri (redis/lettuce src/main/java/io/lettuce/core/RedisURI.java) splits
 * `uri.getQuery()` with a StringTokenizer on `&` and `;`; java.net.URI.getQuery() has already
 * percent-decoded the query (so `verify%50eer=%4EONE` is `verifyPeer=NONE`, and a decoded `%26`
 * splits too). Every token whose lower-cased text starts with `verifypeer=` calls parseVerifyPeer,
 * which sets the mode from the text after the first `=` unless it is empty: the LAST non-empty
 * occurrence wins (`?verifyPeer=FULL&verifyPeer=NONE` is NONE).
 */
export function lettuceVerifyPeer(value: string): string | undefined {
  const text = value.trim();
  const start = text.indexOf("?");
  if (start < 0) return undefined;
  const end = text.indexOf("#", start);
  const query = percentDecode(text.slice(start + 1, end < 0 ? undefined : end));
  let found: string | undefined;
  for (const token of query.split(/[&;]/)) {
    if (!token.toLowerCase().startsWith("verifypeer=")) continue;
    const setting = token.slice(token.indexOf("=") + 1);
    if (setting !== "") found = setting;
  }
  return found;
}

/** Percent-decodes as java.net.URI does (UTF-8); a stray `%` (java.net.URI refuses the URI) leaves the escapes that do decode decoded. */
function percentDecode(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    return text.replace(/%([0-9a-f]{2})/gi, (_escape, hex: string) => String.fromCharCode(Number.parseInt(hex, 16)));
  }
}

const VERIFICATION_OFF_PARAMS: readonly { name: string; hostnameOnly: boolean; off: (value: string) => boolean; schemes?: readonly string[]; read?: (value: string) => string | undefined }[] = [
  { name: "tlsInsecure", hostnameOnly: false, off: isTruthy },
  { name: "tlsAllowInvalidCertificates", hostnameOnly: false, off: isTruthy },
  { name: "sslAllowInvalidCertificates", hostnameOnly: false, off: isTruthy },
  { name: "ssl_cert_reqs", hostnameOnly: false, off: (value) => /^(ssl\.)?(cert_)?none$/i.test(value.trim()) },
  // go-redis ParseURL (options.go): `rediss://…?skip_verify=true` sets TLSConfig.InsecureSkipVerify (also clickhouse-go).
  { name: "skip_verify", hostnameOnly: false, off: isTruthy },
  // Lettuce RedisURI.create (io/lettuce/core/RedisURI.java, parseVerifyPeer): a parameter named
  // verifyPeer in any case is SslVerifyMode.valueOf(value.toUpperCase()): NONE checks no
  // certificate, CA the chain but not the host name, FULL (the default) both. `false` (a boolean,
  // as withVerifyPeer(false) = NONE) says NONE: Lettuce 6.1+ refuses the value at RedisURI.create,
  // a client or wrapper that reads it as a boolean checks nothing. Read as Lettuce reads it: decoded,
  // the last occurrence (lettuceVerifyPeer), not the first raw match of connectionParam.
  { name: "verifyPeer", hostnameOnly: false, off: (value) => /^none$/i.test(value.trim()) || isFalsy(value), schemes: LETTUCE_TLS_SCHEMES, read: lettuceVerifyPeer },
  { name: "verifyPeer", hostnameOnly: true, off: (value) => /^ca$/i.test(value.trim()), schemes: LETTUCE_TLS_SCHEMES, read: lettuceVerifyPeer },
  { name: "tlsAllowInvalidHostnames", hostnameOnly: true, off: isTruthy },
  { name: "sslAllowInvalidHostnames", hostnameOnly: true, off: isTruthy },
  { name: "ssl_check_hostname", hostnameOnly: true, off: isFalsy },
];

function verificationOffParams(value: string): { evidence: string; hostnameOnly: boolean } | undefined {
  const found = VERIFICATION_OFF_PARAMS.flatMap(({ name, hostnameOnly, off, schemes, read }) => {
    if (schemes !== undefined && !schemes.includes(urlScheme(value))) return [];
    const setting = read !== undefined ? read(value) : connectionParam(value, name);
    return setting !== undefined && off(setting) ? [{ text: `${name}=${setting}`, hostnameOnly }] : [];
  });
  if (found.length === 0) return undefined;
  return { evidence: found.map((each) => each.text).join("&"), hostnameOnly: found.every((each) => each.hostnameOnly) };
}

/**
 * Env variables that turn certificate checks off for a whole process or tool, and what each does:
 * Node's `NODE_TLS_REJECT_UNAUTHORIZED` is read only as the exact string `0` (lib/_tls_wrap.js),
 * Python's `PYTHONHTTPSVERIFY=0` (PEP 493), git's `GIT_SSL_NO_VERIFY` whatever its value (git docs:
 * "to any value"), and app settings named `*_TLS_SKIP_VERIFY`, `*_SKIP_TLS_VERIFY`,
 * `*_INSECURE_SKIP_VERIFY` set to true. (An empty `CURL_CA_BUNDLE`: caBundleOff.)
 */
function processVerificationOff(name: string, value: string): string | undefined {
  if (name === "NODE_TLS_REJECT_UNAUTHORIZED") return value === "0" ? "every TLS connection of the Node process accepts any certificate" : undefined;
  if (name === "PYTHONHTTPSVERIFY") return value.trim() === "0" ? "Python's https connections accept any certificate" : undefined;
  if (name === "GIT_SSL_NO_VERIFY") return value !== "" ? "git accepts any certificate whatever the value" : undefined;
  if (/(^|_)(INSECURE_SKIP_(TLS_|SSL_)?VERIFY|(TLS|SSL)_SKIP_VERIF(Y|ICATION)|SKIP_(TLS|SSL)_VERIF(Y|ICATION))$/i.test(name) && isTruthy(value)) return "certificate checks skipped";
  return undefined;
}

/**
 * An empty `CURL_CA_BUNDLE`, read by Python requests' Session.merge_environment_settings. Before
 * requests 2.28.0 (psf/requests#6074, HISTORY.md "setting CURL_CA_BUNDLE to an empty string would
 * disable cert verification"), `verify = os.environ.get("REQUESTS_CA_BUNDLE") or
 * os.environ.get("CURL_CA_BUNDLE")` made verify "" when CURL_CA_BUNDLE was empty and
 * REQUESTS_CA_BUNDLE empty or unset, and the adapter then set cert_reqs CERT_NONE; since 2.28.0 the
 * expression ends `or verify` and an empty value changes nothing. An empty REQUESTS_CA_BUNDLE alone
 * never disabled anything (the `or` went on to CURL_CA_BUNDLE, unset: None, merged to True), and a
 * non-empty REQUESTS_CA_BUNDLE wins over CURL_CA_BUNDLE. Medium: the image's requests version is
 * not in the manifest, and only those older versions accept any certificate.
 */
function caBundleOff(holder: EnvHolder, entry: ContainerEnvVar): boolean {
  if (entry.name !== "CURL_CA_BUNDLE" || entry.value !== "") return false;
  const requests = containerEnv(holder, entry).find((other) => other.name === "REQUESTS_CA_BUNDLE");
  return requests === undefined || (requests.hasInlineValue && requests.value === "");
}

const HOSTNAME_ONLY_DETAIL = "Host names are not checked: any certificate from a trusted CA is accepted for this server.";

/** `tls=true` / `ssl=true` and `tls=false` / `ssl=false` as connection-string options. */
const TLS_ON = /(^|[?&;\s])(tls|ssl)\s*=\s*true/i;
const TLS_OFF = /(^|[?&;\s])(tls|ssl)\s*=\s*false/i;

function hit(item: ComponentMetadataItem, evidence: string): Hit {
  return { path: item.path, evidence };
}

const PLAINTEXT_SCHEMES: Readonly<Record<string, string>> = {
  amqp: "amqps://",
  pulsar: "pulsar+ssl://",
  mqtt: "mqtts:// (or ssl://)",
  tcp: "ssl:// / tls://",
  nats: "tls:// with a CA",
  redis: "rediss://",
  http: "https://",
  ws: "wss://",
  ldap: "ldaps://",
};

/** "1.0", "TLSv1.1", "VersionTLS10", "tls1_1", "SSLv3" → true; "1.2", "TLS13" → false. */
export function isInsecureTlsVersion(value: string): boolean {
  const text = value.trim().toLowerCase();
  if (text.startsWith("ssl")) return true;
  const digits = text.replace(/version|tls|v|[._\s]/g, "");
  return digits === "1" || digits === "10" || digits === "11";
}

/** Which client reads a SQL Server connection string: its default for an unset `Encrypt` differs. */
export type SqlServerReader = "go-mssqldb" | "jdbc" | "unknown";

/** Keywords only SQL Server connection strings use (ADO.NET, ODBC, OLE DB, go-mssqldb). */
const SQLSERVER_KEYWORD = /(?:^|;)\s*(initial catalog|integrated security|trusted_connection|multipleactiveresultsets|trustservercertificate|trust server certificate|encrypt|applicationintent|application intent|multisubnetfailover|failover partner|attachdbfilename|hostnameincertificate|host name in certificate)\s*=/i;
/** An ODBC driver or OLE DB provider for SQL Server. */
const SQLSERVER_DRIVER = /(?:^|;)\s*(driver\s*=\s*\{?[^;}]*sql server|provider\s*=\s*(sqloledb|msoledbsql|sqlncli))/i;
/** Server values only SQL Server uses: a `tcp:` prefix, `host,port`, `host\instance`, Azure SQL. */
const SQLSERVER_SERVER = /^(tcp:|np:|lpc:|admin:)|,\s*\d+$|\\|\.database\.(windows\.net|azure\.com|chinacloudapi\.cn|usgovcloudapi\.net|cloudapi\.de)$/i;
/** Variable names that say SQL Server. */
const SQLSERVER_NAME = /(mssql|sql_?server|azure_?sql)/i;

/**
 * True when a `;`-separated keyword string (ADO.NET, ODBC, go-mssqldb) is a SQL Server one: it
 * names a server (`Server`, `Data Source`, `Address`, `Addr`, `Network Address`) and says SQL
 * Server somewhere (a keyword only SQL Server has, its ODBC driver, a server value only SQL Server
 * takes, or a variable `name` with MSSQL/SQLSERVER in it), and carries no `SslMode` (MySQL
 * Connector/NET and Npgsql strings also use `Server=…;Database=…`).
 */
export function isSqlServerKeywordString(value: string, name = ""): boolean {
  const text = value.trim();
  if (!text.includes(";") || /^[a-z][a-z0-9+.-]*:\/\//i.test(text)) return false;
  const server = /(?:^|;)\s*(?:server|data source|address|addr|network address)\s*=\s*([^;]*)/i.exec(text);
  if (server === null || /(?:^|;)\s*ssl[\s_-]?mode\s*=/i.test(text)) return false;
  return SQLSERVER_KEYWORD.test(text) || SQLSERVER_DRIVER.test(text) || SQLSERVER_SERVER.test((server[1] ?? "").trim()) || SQLSERVER_NAME.test(name);
}

/**
 * What a SQL Server connection string (ADO.NET / go-mssqldb keywords, or a `sqlserver://` URL)
 * says against TLS: `Encrypt=false|no|disable|optional` (plaintext; go-mssqldb's `false` encrypts
 * the login packet only, high) and `TrustServerCertificate=true` (any certificate accepted,
 * medium). With no `Encrypt` at all, the client's default decides (`reader`):
 * - go-mssqldb (Dapr's SQL Server components; `sqlserver://host?…` URLs, its URL form):
 *   encryption off beyond the login packet and TrustServerCertificate on: high;
 * - mssql-jdbc (`jdbc:sqlserver://`): encrypt=true and verified since driver 10.2: no finding;
 * - unknown (an ADO.NET/ODBC string, or a `sqlserver://host;…` URL, in container env): off in
 *   System.Data.SqlClient, go-mssqldb and ODBC Driver 17, verified in Microsoft.Data.SqlClient ≥ 4
 *   and ODBC Driver 18: medium, so the string says it rather than the library version.
 * A keyword string without `Encrypt` is judged only when it is recognisably SQL Server
 * (`isSqlServerKeywordString`, or `reader` go-mssqldb: a SQL Server component).
 */
export function sqlServerTlsIssues(value: string, reader: SqlServerReader = "unknown", name = ""): { evidence: string; severity: Severity } | undefined {
  const text = value.trim();
  const url = /^sqlserver:\/\//i.test(text);
  if (!url && !text.includes(";")) return undefined;
  const found: string[] = [];
  let severity: Severity = "medium";
  const encrypt = connectionParam(text, "encrypt")?.trim();
  if (encrypt !== undefined && /^(false|no|disable|optional|0)$/i.test(encrypt)) {
    found.push(`Encrypt=${encrypt}`);
    severity = "high";
  }
  for (const keyword of ["TrustServerCertificate", "Trust Server Certificate"]) {
    const trust = connectionParam(text, keyword)?.trim();
    if (trust !== undefined && /^(true|yes|1)$/i.test(trust)) found.push(`${keyword}=${trust}`);
  }
  if (encrypt === undefined && reader !== "jdbc" && (url || reader === "go-mssqldb" || isSqlServerKeywordString(text, name))) {
    // go-mssqldb's URL form puts its settings in a `?` query; Prisma's and JDBC's use `;`.
    const goDriver = reader === "go-mssqldb" || (url && !/^sqlserver:\/\/[^;]*;/i.test(text));
    if (goDriver) {
      found.unshift("Encrypt not set (go-mssqldb default: only the login packet is encrypted, any certificate accepted)");
      severity = "high";
    } else {
      found.unshift("Encrypt not set (no encryption in System.Data.SqlClient, go-mssqldb and ODBC Driver 17; verified only in Microsoft.Data.SqlClient ≥ 4 and ODBC Driver 18)");
    }
  }
  return found.length === 0 ? undefined : { evidence: found.join(", "), severity };
}

/**
 * StackExchange.Redis configuration strings in env (`ConnectionStrings__Redis=host:6379,password=…,ssl=False`):
 * TLS only with `ssl=true` (docs/Configuration.md: `ssl={bool}`, default `false`), so `ssl=False`
 * or no `ssl` is plaintext. Lowered to low when every endpoint is on loopback.
 */
function stackExchangeRedisPlaintext(holder: EnvHolder): Hit[] {
  return holder.env.flatMap((entry): Hit[] => {
    if (!entry.hasInlineValue || /^MICRO_/i.test(entry.name)) return [];
    const redis = stackExchangeRedis(entry.value);
    if (redis === undefined) return [];
    const ssl = redis.options.get("ssl");
    if (ssl !== undefined && isTruthy(ssl.value)) return [];
    const said = ssl === undefined ? "ssl not set (StackExchange.Redis default: plaintext)" : `${ssl.key}=${ssl.value}`;
    const found: Hit = { path: entry.path, evidence: `${entry.name}: ${said} (StackExchange.Redis: ${redis.endpoints.join(",")})`, detail: "Use ssl=true with the server's TLS port (6380 on Azure Cache for Redis)." };
    return [redis.endpoints.every(isLoopbackHost) ? envHit("redis://localhost", found) : found];
  });
}

/** A StackExchange.Redis string in env with `ssl=true`: its other TLS options matter only then. */
function stackExchangeTls(entry: ContainerEnvVar): ReturnType<typeof stackExchangeRedis> {
  if (!entry.hasInlineValue || /^MICRO_/i.test(entry.name)) return undefined;
  const redis = stackExchangeRedis(entry.value);
  const ssl = redis?.options.get("ssl");
  return ssl !== undefined && isTruthy(ssl.value) ? redis : undefined;
}

/** System.Security.Authentication.SslProtocols: name → flag value. */
const SSL_PROTOCOLS: Readonly<Record<string, number>> = { none: 0, ssl2: 12, ssl3: 48, tls: 192, default: 240, tls11: 768, tls12: 3072, tls13: 12288 };
const STRONG_SSL_PROTOCOLS = 3072 | 12288;

/**
 * Whether a StackExchange.Redis `sslProtocols=` value allows only TLS 1.0/1.1 (or SSL): the option is
 * an SslProtocols flags value, several joined by `|` (ConfigurationOptions ParseSslProtocols turns `|`
 * into `,` for Enum.TryParse, names in any case, or a number). `None` (the OS default) and any set
 * that includes Tls12 or Tls13 are not weak; a value the client cannot parse (it refuses to start) is not judged.
 */
export function stackExchangeWeakSslProtocols(value: string): boolean {
  let flags = 0;
  for (const raw of value.split(/[|,]/)) {
    const part = raw.trim().toLowerCase();
    const flag = /^\d+$/.test(part) ? Number(part) : Object.hasOwn(SSL_PROTOCOLS, part) ? SSL_PROTOCOLS[part] : undefined;
    if (flag === undefined) return false;
    flags |= flag;
  }
  return flags !== 0 && (flags & STRONG_SSL_PROTOCOLS) === 0;
}

/** A hit on a StackExchange.Redis string: low when every endpoint is on loopback. */
function stackExchangeHit(redis: NonNullable<ReturnType<typeof stackExchangeRedis>>, found: Hit): Hit {
  return redis.endpoints.every(isLoopbackHost) ? envHit("redis://localhost", found) : found;
}

/**
 * StackExchange.Redis `checkCertificateRevocation=false` with `ssl=true` (docs/Configuration.md:
 * "A Boolean value that specifies whether the certificate revocation list is checked during
 * authentication", default true): the certificate is still verified, a revoked one is accepted. Low.
 */
function stackExchangeRevocationOff(entry: ContainerEnvVar): Hit | undefined {
  const redis = stackExchangeTls(entry);
  const option = redis?.options.get("checkcertificaterevocation");
  if (redis === undefined || option === undefined || !isFalsy(option.value)) return undefined;
  return stackExchangeHit(redis, {
    path: entry.path,
    evidence: `${entry.name}: ${option.key}=${option.value} (StackExchange.Redis: ${redis.endpoints.join(",")})`,
    severity: "low",
    detail: "The server's certificate is still verified, but not checked for revocation: a revoked (stolen) certificate is accepted. Remove the option (the default checks revocation).",
  });
}

/** StackExchange.Redis strings in env with `ssl=true` whose `sslProtocols` allow only TLS 1.0/1.1 or SSL (MW-TLS-010). */
function stackExchangeWeakTls(holder: EnvHolder): Hit[] {
  return holder.env.flatMap((entry): Hit[] => {
    const redis = stackExchangeTls(entry);
    const option = redis?.options.get("sslprotocols");
    if (redis === undefined || option === undefined || !stackExchangeWeakSslProtocols(option.value)) return [];
    return [stackExchangeHit(redis, { path: entry.path, evidence: `${entry.name}: ${option.key}=${option.value} (StackExchange.Redis: ${redis.endpoints.join(",")})`, detail: "Use sslProtocols=Tls12|Tls13, or leave it out (the operating system's default)." })];
  });
}

/**
 * Kafka clients set to plaintext through env (M5 of review-auditprec): `*SECURITY_PROTOCOL` =
 * `PLAINTEXT` / `SASL_PLAINTEXT` (Kafka's `security.protocol`; Spring's relaxed binding, Kafka Connect
 * and librdkafka-based images name it so). A broker's `*_LISTENER_SECURITY_PROTOCOL_MAP` and
 * `*_INTER_BROKER_PROTOCOL` do not end so. Low when every bootstrap server of the same container is on loopback.
 */
function kafkaEnvPlaintext(holder: EnvHolder): Hit[] {
  return holder.env.flatMap((entry): Hit[] => {
    if (!entry.hasInlineValue || !/(^|_)SECURITY_PROTOCOL$/i.test(entry.name)) return [];
    const value = entry.value.trim();
    if (!/^(sasl_)?plaintext$/i.test(value)) return [];
    const sasl = /^sasl_/i.test(value);
    const found: Hit = { path: entry.path, evidence: `${entry.name}: ${value} (${sasl ? "SASL credentials and messages in plaintext" : "no TLS, no authentication"})` };
    const servers = containerEnv(holder, entry)
      .filter((other) => other.hasInlineValue && !isPlaceholder(other.value) && /(BOOTSTRAP_SERVERS|KAFKA_BROKERS?|BROKER_LIST)$/i.test(other.name))
      .flatMap((other) => hostsIn(other.value));
    return [servers.length > 0 && servers.every(isLoopbackHost) ? { ...found, severity: "low", detail: "Lowered to low: every bootstrap server is on loopback." } : found];
  });
}

export const transportRules: Rule[] = [
  defineRule({
    id: "MW-TLS-001",
    family: "tls",
    severity: "high",
    title: "Redis component without TLS",
    why: "Dapr talks to Redis in plaintext unless `enableTLS` is \"true\": state, messages and the Redis password cross the network readable by anyone on the path.",
    fix: "Add `enableTLS: \"true\"` (and use a Redis endpoint that serves TLS).",
    example: {
      file: "statestore.yaml",
      bad: componentYaml("state.redis", { redisHost: "redis-master.default.svc.cluster.local:6379" }) + secretRefYaml("redisPassword", "redis"),
      good: componentYaml("state.redis", { redisHost: "redis-master.default.svc.cluster.local:6379", enableTLS: "true" }) + secretRefYaml("redisPassword", "redis"),
    },
    appliesTo: ["dapr-component"],
    check(component) {
      if (componentFamily(component) !== "redis") return [];
      const item = metadataItem(component, "enableTLS");
      if (item !== undefined && (isTruthy(item.value) || item.hasSecretRef)) return [];
      if (item !== undefined) return [hit(item, `enableTLS: "${item.value}"`)];
      return [{ path: typePath(), evidence: `${component.type} without enableTLS` }];
    },
  }),
  defineRule({
    id: "MW-TLS-002",
    family: "tls",
    severity: "high",
    title: "PostgreSQL connection without enforced TLS",
    why: "libpq's `sslmode` `disable`, `allow` and `prefer` (and no sslmode, which means prefer) let the connection fall back to plaintext; an attacker on the path simply refuses TLS. Read in component connection strings, in a postgres component's individual `host`/`hostaddr` fields when it has no connection string (they take no sslmode, so the default prefer applies), in `postgres://` URLs in container env (`DATABASE_URL`, with `PGSSLMODE` of the same container when the URL sets no sslmode), in libpq keyword strings there (`host=pg user=app dbname=orders sslmode=disable`, Go's pgx and lib/pq) and Npgsql strings (`Host=pg;Database=orders;SSL Mode=Disable`; no SSL Mode means Npgsql's default Prefer), in `jdbc:postgresql://` URLs (`SPRING_DATASOURCE_URL`; the JDBC driver's `ssl=true` alone means verify-full, and its `NonValidatingFactory` checks no certificate), and in an explicit `PGSSLMODE` next to a network `PGHOST`.",
    fix: "Use `sslmode=verify-full` with `sslrootcert` pointing at the server's CA.",
    example: {
      file: "statestore.yaml",
      bad: componentYaml("state.postgresql", { connectionString: "host=pg.db.svc user=dapr dbname=state sslmode=disable" }),
      good: componentYaml("state.postgresql", { connectionString: "host=pg.db.svc user=dapr dbname=state sslmode=verify-full sslrootcert=/etc/pg/ca.pem" }),
    },
    appliesTo: ["dapr-component", "workload", "compose-service", "config-values"],
    check(resource) {
      return postgresConnections(resource)
        .filter((connection) => ["", "disable", "allow", "prefer"].includes(connection.mode))
        .map((connection) => postgresHit(connection, connection.mode === "" ? "sslmode not set (libpq default: prefer)" : `sslmode=${connection.mode}`));
    },
  }),
  defineRule({
    id: "MW-TLS-003",
    family: "tls",
    severity: "medium",
    title: "PostgreSQL TLS without host name verification",
    why: "`sslmode=require` encrypts but checks no certificate and `verify-ca` does not check the host name: anyone with a certificate from any trusted CA (or none, for require) can impersonate the database.",
    fix: "Use `sslmode=verify-full`.",
    example: {
      file: "statestore.yaml",
      bad: componentYaml("state.postgresql", { connectionString: "host=pg.db.svc user=dapr dbname=state sslmode=require" }),
      good: componentYaml("state.postgresql", { connectionString: "host=pg.db.svc user=dapr dbname=state sslmode=verify-full" }),
    },
    appliesTo: ["dapr-component", "workload", "compose-service", "config-values"],
    check(resource) {
      return postgresConnections(resource)
        .filter((connection) => ["require", "verify-ca"].includes(connection.mode))
        .map((connection) => postgresHit(connection, `sslmode=${connection.mode}`));
    },
  }),
  defineRule({
    id: "MW-TLS-004",
    family: "tls",
    severity: "high",
    title: "MySQL connection without verified TLS",
    why: "The Go MySQL driver uses plaintext unless the DSN says `tls=true` or `tls=custom`; `tls=preferred` falls back to plaintext and `tls=skip-verify` accepts any certificate. Read in component connection strings and in container env: `mysql://`/`mariadb://` URLs (`mysql+pymysql://`, Prisma, mysql2), Go DSNs (`user:pass@tcp(db:3306)/orders`) and `jdbc:mysql://`/`jdbc:mariadb://` URLs, where `ssl-mode=VERIFY_IDENTITY` (`sslMode=VERIFY_CA`, `verify-full`), `sslaccept=strict`, `ssl=true`, a CA file (`ssl_ca`) or Connector/J's `useSSL=true&verifyServerCertificate=true` count as verified TLS.",
    fix: "Add `tls=true` (or `tls=custom` with `pemPath`) to the DSN.",
    example: {
      file: "statestore.yaml",
      bad: componentYaml("state.mysql", { connectionString: "dapr@tcp(mysql.db.svc:3306)/?allowNativePasswords=true" }),
      good: componentYaml("state.mysql", { connectionString: "dapr@tcp(mysql.db.svc:3306)/?allowNativePasswords=true&tls=true" }),
    },
    appliesTo: ["dapr-component", "workload", "compose-service", "config-values"],
    check(resource) {
      if (resource.kind !== "dapr-component") {
        return envMysqlConnections(resource).flatMap((entry): Hit[] => {
          // A Unix socket (`user@unix(/var/run/mysqld/mysqld.sock)/db`) never leaves the machine.
          if (entry.dsn && /@unix\(/i.test(entry.value)) return [];
          const verdict = mysqlUrlTls(entry.value);
          if (verdict === undefined) return [];
          const host = entry.dsn ? (/@(?:tcp|unix)\(([^)]*)\)/i.exec(entry.value)?.[1] ?? "") : hostOf(entry.value);
          const where = entry.dsn ? `tcp(${host})` : `${entry.jdbc ? "jdbc:" : ""}${urlScheme(entry.value)}://${host}`;
          return [envHit(`mysql://${host}`, { path: entry.path, evidence: `${entry.name}: ${verdict} (${where})` })];
        });
      }
      const component = resource;
      if (!isMysql(component)) return [];
      const item = connectionString(component);
      if (item === undefined || /@unix\(/i.test(item.value)) return [];
      const tls = (connectionParam(item.value, "tls") ?? "").toLowerCase();
      if (tls === "true" || tls === "custom") return [];
      return [hit(item, tls === "" ? "tls not set in the DSN" : `tls=${tls}`)];
    },
  }),
  defineRule({
    id: "MW-TLS-005",
    family: "tls",
    severity: "high",
    title: "Kafka without authentication",
    why: "`authType: none` lets the sidecar (and anyone else) connect to the brokers anonymously; Kafka ACLs cannot tell apps apart.",
    fix: "Use `authType: mtls` (client certificates), `password` (SASL/SCRAM over TLS) or `oidc`.",
    example: {
      file: "pubsub.yaml",
      bad: componentYaml("pubsub.kafka", { brokers: "kafka.default.svc:9093", authType: "none" }, "pubsub"),
      good: componentYaml("pubsub.kafka", { brokers: "kafka.default.svc:9093", authType: "mtls" }, "pubsub") + secretRefYaml("caCert", "kafka-tls") + secretRefYaml("clientCert", "kafka-tls") + secretRefYaml("clientKey", "kafka-tls"),
    },
    appliesTo: ["dapr-component"],
    check(component) {
      if (componentFamily(component) !== "kafka") return [];
      const authType = metadataItem(component, "authType");
      if (authType?.hasInlineValue === true && authType.value.trim().toLowerCase() === "none") return [hit(authType, "authType: none")];
      const authRequired = metadataItem(component, "authRequired");
      if (authType === undefined && authRequired?.hasInlineValue === true && !isTruthy(authRequired.value)) {
        return [hit(authRequired, `authRequired: "${authRequired.value}"`)];
      }
      return [];
    },
  }),
  defineRule({
    id: "MW-TLS-006",
    family: "tls",
    severity: "high",
    title: "Kafka TLS disabled",
    why: "`disableTls: \"true\"` sends messages and SASL credentials to the brokers in plaintext. The same choice made in env for a Kafka client — a variable named `*SECURITY_PROTOCOL` (`SPRING_KAFKA_PROPERTIES_SECURITY_PROTOCOL`, `KAFKA_SECURITY_PROTOCOL`, Kafka Connect's `CONNECT_SECURITY_PROTOCOL`) set to `SASL_PLAINTEXT` (SASL credentials in clear) or `PLAINTEXT` (no TLS, no authentication) — is reported too, low when every bootstrap server of the container is on loopback.",
    fix: "Remove `disableTls` (TLS is on by default) and point `brokers` at the TLS listener; in env, use `SASL_SSL` or `SSL`.",
    example: {
      file: "pubsub.yaml",
      bad: componentYaml("pubsub.kafka", { brokers: "kafka.default.svc:9092", authType: "mtls", disableTls: "true" }, "pubsub"),
      good: componentYaml("pubsub.kafka", { brokers: "kafka.default.svc:9093", authType: "mtls", disableTls: "false" }, "pubsub"),
    },
    appliesTo: ["dapr-component", "workload", "compose-service", "config-values"],
    check(resource) {
      if (resource.kind !== "dapr-component") return kafkaEnvPlaintext(resource);
      const component = resource;
      if (componentFamily(component) !== "kafka") return [];
      const item = metadataItem(component, "disableTls");
      return item !== undefined && isTruthy(item.value) ? [hit(item, `disableTls: "${item.value}"`)] : [];
    },
  }),
  defineRule({
    id: "MW-TLS-007",
    family: "tls",
    severity: "high",
    title: "Plaintext endpoint where a TLS form exists",
    why: "`amqp://`, `pulsar://`, `mqtt://`/`tcp://`, `nats://`, `redis://`, `http://`, `ws://` and `ldap://` endpoints carry messages and credentials unencrypted, although each protocol has a TLS form. Read in component metadata (also RabbitMQ's `protocol: amqp` with `hostname`) and in container env values that are URLs (`REDIS_URL=redis://…`), and StackExchange.Redis configuration strings (.NET, Azure Cache for Redis: `host:6379,password=…,ssl=False`), which are plaintext unless `ssl=true`. Addresses an app listens on are not endpoints and are not reported: a wildcard host (`http://+:8080`, `*`, `0.0.0.0`, `[::]`), ASP.NET Core's `ASPNETCORE_URLS`/`DOTNET_URLS` and Kestrel's `Kestrel__Endpoints__*__Url`, and a `*LISTEN*`/`*BIND*` variable on loopback. A telemetry exporter in env (`OTEL_EXPORTER_*_ENDPOINT`, `*ZIPKIN*`, `*JAEGER*`) is low, as MW-TLS-012 rates Dapr's own tracing endpoints.",
    fix: "Use the TLS scheme (`amqps://`, `pulsar+ssl://`, `mqtts://`/`ssl://`, `rediss://`, `https://`, `wss://`, `ldaps://`; NATS with `tls://` and a CA).",
    example: {
      file: "pubsub.yaml",
      bad: componentYaml("pubsub.rabbitmq", { host: "amqp://rabbitmq.default.svc:5672", durable: "true" }, "pubsub"),
      good: componentYaml("pubsub.rabbitmq", { host: "amqps://rabbitmq.default.svc:5671", durable: "true" }, "pubsub"),
    },
    appliesTo: ["dapr-component", "workload", "compose-service", "config-values"],
    check(resource) {
      const hits: Hit[] = [];
      if (resource.kind !== "dapr-component") {
        for (const entry of envUrls(resource)) {
          const secure = PLAINTEXT_SCHEMES[entry.scheme];
          if (secure === undefined) continue;
          const found = envHit(entry.value, { path: entry.path, evidence: `${entry.name}: ${entry.scheme}://${hostOf(entry.value)}`, detail: `Use ${secure}.` });
          // A telemetry exporter has MW-TLS-012's severity (spans to a collector), as in a Dapr Configuration.
          hits.push(TELEMETRY_EXPORTER_NAME.test(entry.name) && found.severity !== "low"
            ? { ...found, severity: "low", detail: `${found.detail ?? ""} Lowered to low: a telemetry exporter (as MW-TLS-012 rates Dapr's tracing endpoints).`.trim() }
            : found);
        }
        hits.push(...stackExchangeRedisPlaintext(resource));
        return hits;
      }
      for (const item of resource.metadata) {
        if (!item.hasInlineValue || IDENTIFIER_NAME.test(item.name)) continue;
        const match = /^([a-z]+):\/\//i.exec(item.value.trim());
        const scheme = match?.[1]?.toLowerCase() ?? "";
        const secure = PLAINTEXT_SCHEMES[scheme];
        if (secure === undefined) continue;
        const severity = urlSeverity(item.value);
        hits.push({ path: item.path, evidence: `${item.name}: ${scheme}://${hostOf(item.value)}`, detail: `Use ${secure}.`, ...(severity === undefined ? {} : { severity }) });
      }
      // RabbitMQ's properties profile (`hostname`, `username`, `password`) takes the scheme from
      // `protocol` (pubsub/rabbitmq/metadata.yaml: "amqp", "amqps").
      const protocol = componentFamily(resource) === "rabbitmq" ? metadataItem(resource, "protocol") : undefined;
      if (hits.length === 0 && protocol?.hasInlineValue === true && protocol.value.trim().toLowerCase() === "amqp") {
        const hostname = metadataItem(resource, "hostname");
        const where = hostname?.hasInlineValue === true ? `, hostname: ${hostname.value.trim()}` : "";
        const severity = hostname?.hasInlineValue === true && isLoopbackHost(hostname.value) ? "low" as const : undefined;
        hits.push({ path: protocol.path, evidence: `protocol: amqp${where}`, detail: "Use protocol amqps.", ...(severity === undefined ? {} : { severity }) });
      }
      return hits;
    },
  }),
  defineRule({
    id: "MW-TLS-008",
    family: "tls",
    severity: "high",
    title: "MongoDB without TLS",
    why: "A `mongodb://` connection (Dapr's `host` setting, or a `mongodb://` URL in a container env) without `tls=true` (or `ssl=true`) is plaintext: documents and credentials are readable on the network. Dapr's `server` setting connects with `mongodb+srv://`, which has TLS on unless `tls=false`.",
    fix: "Add `tls=true` to `params` (e.g. `?tls=true&tlsCAFile=...`) or use a `mongodb+srv://` server (Dapr's `server` setting), which enables TLS by default.",
    example: {
      file: "statestore.yaml",
      bad: componentYaml("state.mongodb", { host: "mongo.db.svc:27017", databaseName: "orders" }),
      good: componentYaml("state.mongodb", { host: "mongo.db.svc:27017", databaseName: "orders", params: "?tls=true&tlsCAFile=/etc/mongo/ca.pem" }),
    },
    appliesTo: ["dapr-component", "workload", "compose-service", "config-values"],
    check(resource) {
      if (resource.kind !== "dapr-component") {
        return envUrls(resource).flatMap((entry): Hit[] => {
          if (entry.scheme !== "mongodb" && entry.scheme !== "mongodb+srv") return [];
          const off = TLS_OFF.test(entry.value);
          if (entry.scheme === "mongodb+srv" ? !off : TLS_ON.test(entry.value) && !off) return [];
          const evidence = `${entry.name}: ${off ? "tls=false" : "no tls=true"} (${entry.scheme}://${hostOf(entry.value)})`;
          return [envHit(entry.value, { path: entry.path, evidence })];
        });
      }
      const component = resource;
      if (componentFamily(component) !== "mongodb") return [];
      const texts = component.metadata.filter((item) => item.hasInlineValue).map((item) => item.value);
      const off = texts.some((text) => TLS_OFF.test(text));
      // Dapr builds `mongodb+srv://<server>/<params>` from `server` (components-contrib
      // state/mongodb, connectionURIFormatWithSrv) unless a connection string is given.
      const server = metadataItem(component, "server");
      const connection = metadataItem(component, "connectionString");
      const plainConnection = connection?.hasInlineValue === true && /^mongodb:\/\//i.test(connection.value.trim());
      const srvServer = server !== undefined && !plainConnection && (server.hasInlineValue ? server.value.trim() !== "" : server.hasSecretRef);
      if (srvServer || texts.some((text) => /mongodb\+srv:\/\//i.test(text))) {
        if (!off) return [];
      } else if (texts.some((text) => TLS_ON.test(text)) && !off) {
        return [];
      }
      // Where to point: the value that turns TLS off, else the connection string Dapr uses, else params/server/host.
      const anchor = component.metadata.find((item) => item.hasInlineValue && TLS_OFF.test(item.value))
        ?? (plainConnection ? connection : undefined)
        ?? ["params", "connectionString", "server", "host"].map((name) => metadataItem(component, name)).find((item) => item !== undefined);
      const evidence = off ? "tls=false" : "no tls=true in host/params";
      return [anchor === undefined ? { path: typePath(), evidence } : hit(anchor, evidence)];
    },
  }),
  defineRule({
    id: "MW-TLS-009",
    family: "tls",
    severity: "high",
    title: "TLS certificate verification disabled",
    why: "`skipVerify`/`insecureSkipVerify`/`insecureSSL`/`tlsAllowInsecureConnection: true` (not for Dapr's Pulsar components, which do not read it: there a `pulsar+ssl://`/`https://` host without `enableTLS: \"true\"` is TLS that accepts any certificate, as Dapr sets the client's TLSAllowInsecureConnection to the opposite of enableTLS), MongoDB's `tlsInsecure=true`/`tlsAllowInvalidCertificates=true` and redis-py's/Celery's `ssl_cert_reqs=none|CERT_NONE` inside a value (`params`, a host or connection string, a container env URL), and, in env, `NODE_TLS_REJECT_UNAUTHORIZED=0` (every TLS connection of a Node process), `PYTHONHTTPSVERIFY=0`, `GIT_SSL_NO_VERIFY` (any value) and `*_TLS_SKIP_VERIFY`/`*_INSECURE_SKIP_VERIFY=true`, accept any certificate, so TLS no longer proves who is on the other end: a man in the middle reads and changes everything. go-redis's `skip_verify=true` in a `rediss://` URL is read the same way, and Lettuce's `verifyPeer=NONE` (or `false`) in a `rediss://` (`redis+ssl://`, `redis+tls://`, `rediss-sentinel://`) URL; its `verifyPeer=CA` checks the chain but not the host name (medium). `tlsAllowInvalidHostnames=true` and `ssl_check_hostname=false` skip only the host name check (medium). An empty `CURL_CA_BUNDLE` (with `REQUESTS_CA_BUNDLE` empty or unset) is medium: Python requests before 2.28.0 then verify nothing, later ones ignore it; an empty `REQUESTS_CA_BUNDLE` alone never turned verification off and is not reported. StackExchange.Redis `checkCertificateRevocation=false` (with `ssl=true`) is low: the certificate is verified, a revoked one accepted.",
    fix: "Remove the skip-verify setting and give the component the CA that signed the server's certificate (`caCert`).",
    example: {
      file: "pubsub.yaml",
      bad: componentYaml("pubsub.mqtt3", { url: "mqtts://mqtt.default.svc:8883", skipVerify: "true" }, "pubsub"),
      good: componentYaml("pubsub.mqtt3", { url: "mqtts://mqtt.default.svc:8883", skipVerify: "false" }, "pubsub"),
    },
    appliesTo: ["dapr-component", "workload", "compose-service", "config-values"],
    check(resource) {
      if (resource.kind !== "dapr-component") {
        return resource.env.flatMap((entry): Hit[] => {
          if (!entry.hasInlineValue || /^MICRO_/i.test(entry.name)) return [];
          if (entry.name === "CURL_CA_BUNDLE") {
            if (!caBundleOff(resource, entry)) return [];
            return [{ path: entry.path, evidence: `${entry.name}: "" (Python requests before 2.28.0: any certificate accepted)`, severity: "medium", detail: "Python requests 2.28.0 and later ignore an empty CURL_CA_BUNDLE; older ones (psf/requests#6074) verify nothing. Remove the variable, or set it to the CA bundle's path." }];
          }
          const process = processVerificationOff(entry.name, entry.value);
          if (process !== undefined) return [{ path: entry.path, evidence: `${entry.name}: ${entry.value} (${process})` }];
          const revocation = stackExchangeRevocationOff(entry);
          if (revocation !== undefined) return [revocation];
          const off = verificationOffParams(entry.value);
          if (off === undefined) return [];
          return [envHit(entry.value, { path: entry.path, evidence: `${entry.name}: ${off.evidence}`, ...(off.hostnameOnly ? { detail: HOSTNAME_ONLY_DETAIL, severity: "medium" as const } : {}) })];
        });
      }
      const hits: Hit[] = [];
      const pulsar = pulsarTransport(resource);
      if (pulsar?.verdict === "unverified") hits.push(pulsar.hit);
      let loopback: boolean | undefined;
      for (const item of resource.metadata) {
        // Dapr's Pulsar components read no tlsAllowInsecureConnection: enableTLS decides (pulsarTransport).
        if (componentFamily(resource) === "pulsar" && /^tls.?allow.?insecure/i.test(item.name)) continue;
        if (/(skip.?(tls.?)?verif|insecure.?skip|tls.?insecure|^insecure$|^insecure.?ssl$|^tls.?allow.?insecure)/i.test(item.name) && isTruthy(item.value)) {
          hits.push(hit(item, `${item.name}: "${item.value}"`));
          continue;
        }
        if (!item.hasInlineValue) continue;
        const off = verificationOffParams(item.value);
        if (off === undefined) continue;
        if (!off.hostnameOnly) {
          hits.push(hit(item, `${item.name}: ${off.evidence}`));
          continue;
        }
        // The rule's own severity is lowered on loopback by the runner; this one is set here.
        loopback ??= isLoopbackComponent(resource);
        hits.push({ path: item.path, evidence: `${item.name}: ${off.evidence}`, detail: HOSTNAME_ONLY_DETAIL, severity: loopback ? "low" : "medium" });
      }
      return hits;
    },
  }),
  defineRule({
    id: "MW-TLS-010",
    family: "tls",
    severity: "medium",
    title: "Minimum TLS version below 1.2",
    why: "TLS 1.0 and 1.1 are deprecated (RFC 8996) and allow downgrade to weak ciphers; meshward's own floor is 1.2. Read in component metadata (`minTLSVersion` and the like) and in StackExchange.Redis configuration strings in container env (`host:6380,ssl=true,sslProtocols=Tls|Tls11`) whose `sslProtocols` names only TLS 1.0/1.1 or SSL.",
    fix: "Set the minimum version to 1.2 (or 1.3 where all peers support it).",
    example: {
      file: "binding.yaml",
      bad: componentYaml("bindings.http", { url: "https://api.example.org", minTLSVersion: "1.0" }, "api"),
      good: componentYaml("bindings.http", { url: "https://api.example.org", minTLSVersion: "1.2" }, "api"),
    },
    appliesTo: ["dapr-component", "workload", "compose-service", "config-values"],
    check(component) {
      if (component.kind !== "dapr-component") return stackExchangeWeakTls(component);
      return component.metadata
        .filter((item) => /(min.?(tls.?)?version|tls.?min.?version|min.?tls)$/i.test(item.name) && isInsecureTlsVersion(item.value))
        .map((item) => hit(item, `${item.name}: "${item.value}"`));
    },
  }),
  defineRule({
    id: "MW-TLS-011",
    family: "tls",
    severity: "high",
    title: "TLS switched off in a component",
    why: "`disableSSL: true` (AWS S3 and S3-compatible stores), `usePlainTextConnection: true` (Zeebe), `tlsEnable: \"false\"` (etcd) and `enableTLS: \"false\"` (components other than Redis, which is MW-TLS-001's, and Pulsar, below) make the component talk to its backend in plaintext: data and credentials cross the network readable and changeable by anyone on the path. Dapr's Pulsar components are different: the `host` scheme alone decides TLS (`pulsar+ssl://`, `https://`), and a host without a scheme (`broker:6650`) is dialled as `pulsar://`, plaintext, whatever `enableTLS` says (it only turns the certificate check on; MW-TLS-009), so such a host is reported here.",
    fix: "Remove the switch (or set it the secure way) and point the component at the backend's TLS endpoint, with the CA that signs its certificate. For Pulsar: `host: pulsar+ssl://broker:6651` with `enableTLS: \"true\"`.",
    example: {
      file: "binding.yaml",
      bad: componentYaml("bindings.aws.s3", { bucket: "orders", endpoint: "https://s3.eu-west-1.amazonaws.com", disableSSL: "true" }, "s3"),
      good: componentYaml("bindings.aws.s3", { bucket: "orders", endpoint: "https://s3.eu-west-1.amazonaws.com", disableSSL: "false" }, "s3"),
    },
    appliesTo: ["dapr-component"],
    check(component) {
      const hits = component.metadata.filter((item) => tlsOffSwitch(component, item)).map((item) => hit(item, `${item.name}: "${item.value}"`));
      // Pulsar: a host without a scheme is dialled as `pulsar://` whatever enableTLS says; a
      // `pulsar://` host is MW-TLS-007's, an unverified `pulsar+ssl://` one MW-TLS-009's.
      const pulsar = pulsarTransport(component);
      if (pulsar?.verdict === "plaintext") hits.push(pulsar.hit);
      return hits;
    },
  }),
  defineRule({
    id: "MW-TLS-012",
    family: "tls",
    severity: "low",
    title: "Tracing exporter sends spans over plaintext",
    why: "Spans carry URLs, headers and timings of every call; a `zipkin.endpointAddress: http://…` or an OpenTelemetry exporter with `isSecure: false` sends them unencrypted to the collector.",
    fix: "Use an `https://` Zipkin endpoint, or set `otel.isSecure: true` with a collector that serves TLS.",
    example: {
      file: "config.yaml",
      bad: "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: tracing\nspec:\n  tracing:\n    samplingRate: \"1\"\n    zipkin:\n      endpointAddress: http://zipkin.observability.svc:9411/api/v2/spans\n",
      good: "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: tracing\nspec:\n  tracing:\n    samplingRate: \"1\"\n    zipkin:\n      endpointAddress: https://zipkin.observability.svc:9411/api/v2/spans\n",
    },
    appliesTo: ["dapr-configuration"],
    check(configuration) {
      const hits: Hit[] = [];
      const zipkin = asText(get(configuration.spec, "tracing", "zipkin", "endpointAddress")).trim();
      if (/^http:\/\//i.test(zipkin)) hits.push({ path: ["spec", "tracing", "zipkin", "endpointAddress"], evidence: `zipkin.endpointAddress: http://${hostOf(zipkin)}` });
      const otel = get(configuration.spec, "tracing", "otel");
      if (isDict(otel) && isFalsy(otel["isSecure"])) {
        hits.push({ path: ["spec", "tracing", "otel", "isSecure"], evidence: `otel.isSecure: ${asText(otel["isSecure"])} (${redactConnectionString(asText(otel["endpointAddress"])) || "no endpoint"})` });
      }
      return hits;
    },
  }),
  defineRule({
    id: "MW-TLS-013",
    family: "tls",
    severity: "high",
    title: "HTTPEndpoint calls a service over plaintext HTTP",
    why: "A Dapr `HTTPEndpoint` with an `http://` `baseUrl` sends every invocation, and the headers the sidecar adds to it (often API keys), unencrypted to the external service.",
    fix: "Use an `https://` `baseUrl`; give `clientTLS.rootCA` when the service's certificate is not from a public CA.",
    example: {
      file: "httpendpoint.yaml",
      bad: "apiVersion: dapr.io/v1alpha1\nkind: HTTPEndpoint\nmetadata:\n  name: payments\nspec:\n  baseUrl: http://payments.example.org\n",
      good: "apiVersion: dapr.io/v1alpha1\nkind: HTTPEndpoint\nmetadata:\n  name: payments\nspec:\n  baseUrl: https://payments.example.org\n",
    },
    appliesTo: ["dapr-httpendpoint"],
    check(endpoint) {
      if (!/^http:\/\//i.test(endpoint.baseUrl.trim())) return [];
      const severity = urlSeverity(endpoint.baseUrl);
      return [{ path: ["spec", "baseUrl"], evidence: `baseUrl: http://${hostOf(endpoint.baseUrl)}`, ...(severity === undefined ? {} : { severity }) }];
    },
  }),
  defineRule({
    id: "MW-TLS-014",
    family: "tls",
    severity: "high",
    title: "SQL Server connection without verified TLS",
    why: "`Encrypt=false` (also `no`, `disable`, `optional`) sends queries and results in plaintext (go-mssqldb, which Dapr's SQL Server components use, encrypts only the login packet with `false`), and `TrustServerCertificate=true` accepts any certificate, so anyone on the path can impersonate the database (medium). With no `Encrypt` at all the client's default decides: go-mssqldb (a Dapr SQL Server component's connection string, a `sqlserver://host?…` URL) encrypts only the login packet and trusts any certificate (high); an ADO.NET/ODBC string or a `sqlserver://host;…` URL in container env is read by a client meshward cannot see, off by default in System.Data.SqlClient, go-mssqldb and ODBC Driver 17 and verified in Microsoft.Data.SqlClient ≥ 4 and ODBC Driver 18 (medium); mssql-jdbc (`jdbc:sqlserver://`) encrypts and verifies by default since 10.2 (no finding). An env string counts as SQL Server when it names a server and has a keyword, driver or server form only SQL Server uses (`Initial Catalog`, `Integrated Security`, `Driver={ODBC Driver 18 for SQL Server}`, `tcp:host,1433`, `*.database.windows.net`) or its variable says MSSQL/SQLSERVER. Read in component connection strings (`state.sqlserver`, `bindings.sqlserver`) and in container env, `.env` files, ConfigMaps and Secrets (also `jdbc:sqlserver://` URLs).",
    fix: "Use `Encrypt=true` (or `strict`) without `TrustServerCertificate`, and give the CA (`certificate=` for go-mssqldb) when the server's certificate is not from a public CA.",
    example: {
      file: "statestore.yaml",
      bad: componentYaml("state.sqlserver", { connectionString: "Server=sql.db.svc;Database=dapr;User ID=dapr;Encrypt=false;" }),
      good: componentYaml("state.sqlserver", { connectionString: "Server=sql.db.svc;Database=dapr;User ID=dapr;Encrypt=true;" }),
    },
    appliesTo: ["dapr-component", "workload", "compose-service", "config-values"],
    check(resource) {
      if (resource.kind !== "dapr-component") {
        return resource.env
          .filter((entry) => entry.hasInlineValue && !isPlaceholder(entry.value) && !/^MICRO_/i.test(entry.name))
          .flatMap((entry): Hit[] => {
            const value = withoutJdbc(entry.value);
            const issues = sqlServerTlsIssues(value, value !== entry.value ? "jdbc" : "unknown", entry.name);
            if (issues === undefined) return [];
            const found: Hit = { path: entry.path, evidence: `${entry.name}: ${issues.evidence}`, ...(issues.severity === "high" ? {} : { severity: issues.severity }) };
            return [found];
          });
      }
      // Dapr's SQL Server components (state.sqlserver, bindings.sqlserver) read the connection
      // string with go-mssqldb; other components' values are judged only when they say SQL Server.
      const sqlServer = /sqlserver|mssql/.test(componentFamily(resource));
      return resource.metadata
        .filter((item) => item.hasInlineValue && !isPlaceholder(item.value) && !IDENTIFIER_NAME.test(item.name))
        .flatMap((item): Hit[] => {
          const connection = sqlServer && /^(connection.?string|url|dsn|connection)$/i.test(item.name);
          const issues = sqlServerTlsIssues(item.value, connection ? "go-mssqldb" : "unknown", item.name);
          return issues === undefined ? [] : [{ path: item.path, evidence: `${item.name}: ${issues.evidence}`, ...(issues.severity === "high" ? {} : { severity: issues.severity }) }];
        });
    },
  }),
  defineRule({
    id: "MW-TLS-015",
    family: "tls",
    severity: "high",
    title: "Azure Container App ingress serves plaintext HTTP",
    why: "`ingress.allowInsecure: true` makes the app's ingress answer `http://` requests as they are instead of redirecting them to HTTPS: requests, cookies and bearer tokens cross the network in clear, and a client that starts on `http://` is never moved to TLS. With `external: true` that network is the internet (high); an internal ingress carries it across the Container Apps environment (medium).",
    fix: "Remove `allowInsecure` (it defaults to false: HTTP is redirected to HTTPS) or set it to `false`.",
    example: {
      file: "containerapp.yaml",
      bad: "name: orders\ntype: Microsoft.App/containerApps\nproperties:\n  configuration:\n    ingress:\n      external: true\n      targetPort: 8080\n      allowInsecure: true\n  template:\n    containers:\n      - name: orders\n        image: ordersacr.azurecr.io/orders:1.0.0\n",
      good: "name: orders\ntype: Microsoft.App/containerApps\nproperties:\n  configuration:\n    ingress:\n      external: true\n      targetPort: 8080\n      allowInsecure: false\n  template:\n    containers:\n      - name: orders\n        image: ordersacr.azurecr.io/orders:1.0.0\n",
    },
    appliesTo: ["workload"],
    check(workload) {
      const ingress = workload.ingress;
      if (ingress === undefined || !ingress.allowInsecure) return [];
      return [{
        path: [...ingress.path, "allowInsecure"],
        evidence: `allowInsecure: true (${ingress.external ? "external" : "internal"} ingress)`,
        ...(ingress.external ? {} : { severity: "medium" as const, detail: "Internal ingress: plaintext inside the Container Apps environment." }),
      }];
    },
  }),
];
