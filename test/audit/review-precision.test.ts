import { describe, expect, it } from "vitest";
import { auditSources, loadSources } from "../../src/audit/audit.ts";
import { collectPosture, compareEnvironments } from "../../src/audit/drift.ts";

// Precision findings of review-auditprec (branch fix-prec): each block is one finding (H1…L4),
// with the quiet cases beside the ones that must be reported. Fixtures are written the way the
// upstream documentation writes them; the source is cited above each block.

const findings = (file: string, text: string): string[] =>
  auditSources([{ file, text }]).findings.map((finding) => `${finding.ruleId}@${finding.line}:${finding.severity} ${finding.evidence}`);

const ids = (file: string, text: string): string[] =>
  auditSources([{ file, text }]).findings.map((finding) => `${finding.ruleId}@${finding.line}:${finding.severity}`);

/** A Deployment whose one container has these env values. */
const deployment = (vars: Record<string, string>): string =>
  `apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: orders\nspec:\n  template:\n    spec:\n      containers:\n        - name: app\n          image: orders:1\n          env:\n${Object.entries(vars).map(([name, value]) => `            - name: ${name}\n              value: ${JSON.stringify(value)}`).join("\n")}\n`;

/** The env line of the n-th variable (0-based) in `deployment`. */
const envLine = (index: number): number => 13 + 2 * index;

// H1. learn.microsoft.com/azure/container-apps/dapr-components, "Component schema": "In Azure
// Container Apps, the above schema is slightly simplified … remove unnecessary fields, including
// apiVersion, kind, and redundant metadata and spec properties": `componentType`, `version`,
// `metadata` (`name` + `value` | `secretRef`), `secrets`, `scopes`.
describe("H1: Azure Container Apps Dapr components (componentType:)", () => {
  const aca = [
    "componentType: state.redis",
    "version: v1",
    "metadata:",
    "  - name: redisHost",
    "    value: orders-cache.redis.cache.windows.net:6379",
    "  - name: redisPassword",
    "    value: Zx9vQk2LmN8pR4tY",
    "  - name: enableTLS",
    '    value: "false"',
    "scopes:",
    "  - orders",
    "",
  ].join("\n");

  it("an inline password and enableTLS false are reported at their lines", () => {
    expect(findings("aca/statestore.yaml", aca)).toEqual([
      "MW-SECRET-001@7:high redisPassword: <redacted, 16 characters>",
      "MW-TLS-001@9:high enableTLS: \"false\"",
    ]);
    expect(auditSources([{ file: "aca/statestore.yaml", text: aca }]).unknownKinds).toEqual({});
  });

  it("a component without enableTLS is reported at componentType; secretRef entries are references", () => {
    const text = "componentType: state.redis\nversion: v1\nmetadata:\n  - name: redisHost\n    value: cache.redis.cache.windows.net:6380\n  - name: redisPassword\n    secretRef: redis-key\nsecrets:\n  - name: redis-key\n    keyVaultUrl: https://kv.vault.azure.net/secrets/redis-key\n    identity: system\n";
    expect(findings("aca/statestore.yaml", text)).toEqual(["MW-TLS-001@1:high state.redis without enableTLS"]);
    const secure = text.replace("metadata:\n", "metadata:\n  - name: enableTLS\n    value: \"true\"\n");
    expect(findings("aca/statestore.yaml", secure)).toEqual([]);
  });

  it("inline `secrets` values are MW-SECRET-008 and judged by the connection-string rules", () => {
    const text = "componentType: state.postgresql\nversion: v1\nmetadata:\n  - name: connectionString\n    secretRef: pg\nsecrets:\n  - name: pg\n    value: \"postgres://app:Wint3r-is-c0ming@pg.prod.internal/orders?sslmode=disable\"\n";
    expect(ids("aca/pg.yaml", text)).toEqual(["MW-SECRET-008@8:medium", "MW-TLS-002@8:high"]);
  });

  it("the ARM resource form (Microsoft.App/managedEnvironments/daprComponents, fields under properties) is read too", () => {
    const text = "name: pubsub\ntype: Microsoft.App/managedEnvironments/daprComponents\nproperties:\n  componentType: pubsub.rabbitmq\n  version: v1\n  metadata:\n    - name: host\n      value: amqp://rabbit.internal:5672\n";
    expect(findings("arm/pubsub.yaml", text)).toEqual(["MW-TLS-007@8:high host: amqp://rabbit.internal:5672"]);
  });

  it("documents that only look alike stay unknown kinds", () => {
    const result = auditSources([{ file: "x.yaml", text: "componentType: not a type\nmetadata:\n  - name: a\n    value: b\n" }]);
    expect(result.findings).toEqual([]);
    expect(result.unknownKinds).toEqual({ "(no kind)": 1 });
  });
});

// H2. StackExchange.Redis docs/Configuration.md: "Tokens in the configuration string are
// comma-separated; any without an `=` sign are assumed to be redis server endpoints";
// `password={string}`, `ssl={bool}` (default `false`), `abortConnect` (`false` on Azure). The
// Azure portal's form: `<name>.redis.cache.windows.net:6380,password=<key>,ssl=True,abortConnect=False`.
describe("H2: StackExchange.Redis configuration strings in env", () => {
  const key = "Zx9vQk2LmN8pR4tYq7W3eX5cV1bN0mK2sD4fG6hJ8kL=";
  const host = "cart-cache.redis.cache.windows.net";

  it("ssl=False with an inline key: the key (redacted, ssl still shown) and the plaintext connection", () => {
    expect(findings("d.yaml", deployment({ ConnectionStrings__Redis: `${host}:6379,password=${key},ssl=False,abortConnect=False` }))).toEqual([
      `MW-SECRET-005@${envLine(0)}:high ConnectionStrings__Redis: ${host}:6379,password=****,ssl=False,abortConnect=False`,
      `MW-TLS-007@${envLine(0)}:high ConnectionStrings__Redis: ssl=False (StackExchange.Redis: ${host}:6379)`,
    ]);
  });

  it("ssl=True with an inline key: the key only; no ssl at all is plaintext (the client's default)", () => {
    expect(findings("d.yaml", deployment({ REDIS: `${host}:6380,password=${key},ssl=True,abortConnect=False` })))
      .toEqual([`MW-SECRET-005@${envLine(0)}:high REDIS: ${host}:6380,password=****,ssl=True,abortConnect=False`]);
    expect(findings("d.yaml", deployment({ REDIS: `${host}:6379,abortConnect=false` })))
      .toEqual([`MW-TLS-007@${envLine(0)}:high REDIS: ssl not set (StackExchange.Redis default: plaintext) (StackExchange.Redis: ${host}:6379)`]);
  });

  it("in a .env file and a ConfigMap too; a loopback endpoint is low; placeholders are no secret", () => {
    expect(ids(".env", `REDIS=${host}:6379,password=${key},ssl=False\n`)).toEqual(["MW-SECRET-005@1:high", "MW-TLS-007@1:high"]);
    const configMap = `apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg\ndata:\n  Redis: "localhost:6379,abortConnect=false"\n`;
    expect(ids("cm.yaml", configMap)).toEqual(["MW-TLS-007@6:low"]);
    expect(ids(".env", `REDIS=${host}:6380,password=<key>,ssl=True\n`)).toEqual([]);
    expect(ids(".env", `REDIS=${host}:6380,password=\${REDIS_KEY},ssl=true\n`)).toEqual([]);
  });

  it("values that only look alike are not read as StackExchange.Redis strings", () => {
    expect(ids(".env", "KAFKA_BROKERS=broker-1:9092,broker-2:9092\nTAGS=a:1,b=2\nLIST=redis:6379,foo=bar\n")).toEqual([]);
  });
});

// H3. Switches that turn certificate checks off:
// - nodejs.org/api/cli.html, NODE_TLS_REJECT_UNAUTHORIZED=value: "If value equals '0', certificate
//   validation is disabled for TLS connections" (lib/_tls_wrap.js compares with the string '0');
// - PEP 493: `PYTHONHTTPSVERIFY=0` turns verification off in the interpreters that implement it;
// - git-scm.com/docs/git, GIT_SSL_NO_VERIFY: "Setting and exporting this environment variable to any
//   value tells Git not to verify the SSL certificate";
// - redis-py redis/connection.py (SSLConnection: CERT_REQS {"none", "optional", "required"}) and Celery's
//   `rediss://…?ssl_cert_reqs=CERT_NONE`: no certificate check; `ssl_check_hostname=false`: host name only.
describe("H3: verification turned off in env", () => {
  it("NODE_TLS_REJECT_UNAUTHORIZED=0, PYTHONHTTPSVERIFY=0 and GIT_SSL_NO_VERIFY are MW-TLS-009 high", () => {
    expect(findings("d.yaml", deployment({ NODE_TLS_REJECT_UNAUTHORIZED: "0", PYTHONHTTPSVERIFY: "0", GIT_SSL_NO_VERIFY: "true" }))).toEqual([
      `MW-TLS-009@${envLine(0)}:high NODE_TLS_REJECT_UNAUTHORIZED: 0 (every TLS connection of the Node process accepts any certificate)`,
      `MW-TLS-009@${envLine(1)}:high PYTHONHTTPSVERIFY: 0 (Python's https connections accept any certificate)`,
      `MW-TLS-009@${envLine(2)}:high GIT_SSL_NO_VERIFY: true (git accepts any certificate whatever the value)`,
    ]);
    expect(ids(".env", "NODE_TLS_REJECT_UNAUTHORIZED=0\n")).toEqual(["MW-TLS-009@1:high"]);
    // Quiet: Node checks only the exact string '0'; `1` is the default.
    expect(ids("d.yaml", deployment({ NODE_TLS_REJECT_UNAUTHORIZED: "1", PYTHONHTTPSVERIFY: "1" }))).toEqual([]);
  });

  it("*_TLS_SKIP_VERIFY / *_INSECURE_SKIP_VERIFY=true are MW-TLS-009; names without TLS/SSL/INSECURE are not", () => {
    expect(ids("d.yaml", deployment({ KAFKA_TLS_SKIP_VERIFY: "true", ES_INSECURE_SKIP_VERIFY: "1" }))).toEqual([`MW-TLS-009@${envLine(0)}:high`, `MW-TLS-009@${envLine(1)}:high`]);
    expect(ids("d.yaml", deployment({ KAFKA_TLS_SKIP_VERIFY: "false", COSIGN_SKIP_VERIFY: "true", SKIP_VERIFY_EMAIL: "true" }))).toEqual([]);
  });

  it("rediss:// with ssl_cert_reqs=none|CERT_NONE is high, ssl_check_hostname=false medium, CERT_REQUIRED quiet", () => {
    expect(findings("d.yaml", deployment({ CELERY_BROKER_URL: "rediss://:@cache.prod.internal:6380/0?ssl_cert_reqs=CERT_NONE" })))
      .toEqual([`MW-TLS-009@${envLine(0)}:high CELERY_BROKER_URL: ssl_cert_reqs=CERT_NONE`]);
    expect(ids("d.yaml", deployment({ REDIS_URL: "rediss://cache.prod.internal:6380?ssl_cert_reqs=none" }))).toEqual([`MW-TLS-009@${envLine(0)}:high`]);
    expect(ids("d.yaml", deployment({ REDIS_URL: "rediss://cache.prod.internal:6380?ssl_check_hostname=false" }))).toEqual([`MW-TLS-009@${envLine(0)}:medium`]);
    expect(ids("d.yaml", deployment({ REDIS_URL: "rediss://cache.prod.internal:6380?ssl_cert_reqs=CERT_REQUIRED" }))).toEqual([]);
  });
});

// H4. libpq keyword/value strings (postgresql.org/docs/current/libpq-connect.html, "Keyword/Value
// Connection Strings": `host=localhost port=5432 dbname=mydb connect_timeout=10`; sslmode default
// `prefer`), as Go's pgx and lib/pq take them, and Npgsql strings (npgsql.org/doc/connection-string-parameters:
// "keyword1=value; keyword2=value; … case-insensitive"; `SSL Mode` default `Prefer`; SslMode enum
// Disable, Allow, Prefer, Require, VerifyCA, VerifyFull).
describe("H4: PostgreSQL keyword strings in env, ConfigMaps and .env files", () => {
  it("libpq keyword strings are judged by sslmode like postgres:// URLs", () => {
    const env = [
      "DATABASE_DSN=host=pg.prod.svc port=5432 user=orders dbname=orders sslmode=disable",
      "PG_DSN_REQUIRE=host=pg.prod.svc user=orders dbname=orders sslmode=require",
      "PG_DSN_UNSET=host=pg.prod.svc user=orders dbname=orders",
      "PG_DSN_OK=host=pg.prod.svc user=orders dbname=orders sslmode=verify-full sslrootcert=/etc/pg/ca.pem",
      "",
    ].join("\n");
    expect(findings("app/.env", env)).toEqual([
      "MW-TLS-002@1:high DATABASE_DSN: sslmode=disable (host=pg.prod.svc)",
      "MW-TLS-003@2:medium PG_DSN_REQUIRE: sslmode=require (host=pg.prod.svc)",
      "MW-TLS-002@3:high PG_DSN_UNSET: sslmode not set (libpq default: prefer) (host=pg.prod.svc)",
    ]);
  });

  it("Npgsql strings: SSL Mode / SslMode in any case, Prefer when not set; VerifyFull is quiet", () => {
    expect(findings("app/.env", "ConnectionStrings__Orders=Host=pg.prod.svc;Port=5432;Database=orders;Username=orders;SSL Mode=Disable\n"))
      .toEqual(["MW-TLS-002@1:high ConnectionStrings__Orders: SSL Mode=Disable (Host=pg.prod.svc)"]);
    expect(ids("d.yaml", deployment({ ConnectionStrings__Orders: "Host=pg.prod.svc;Database=orders;Username=orders;SslMode=Require" }))).toEqual([`MW-TLS-003@${envLine(0)}:medium`]);
    expect(findings("d.yaml", deployment({ ConnectionStrings__Postgres: "Host=pg.prod.svc;Database=orders;Username=orders" })))
      .toEqual([`MW-TLS-002@${envLine(0)}:high ConnectionStrings__Postgres: SSL Mode not set (Npgsql default: Prefer) (Host=pg.prod.svc)`]);
    expect(ids("d.yaml", deployment({ ConnectionStrings__Orders: "Host=pg.prod.svc;Database=orders;SSL Mode=VerifyFull" }))).toEqual([]);
  });

  it("in a ConfigMap; loopback is low; sockets and other databases' strings stay quiet", () => {
    const configMap = `apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg\ndata:\n  DSN: "host=pg.prod.svc dbname=orders sslmode=allow"\n`;
    expect(ids("cm.yaml", configMap)).toEqual(["MW-TLS-002@6:high"]);
    expect(ids(".env", "DSN=host=localhost dbname=orders sslmode=disable\n")).toEqual(["MW-TLS-002@1:low"]);
    expect(ids(".env", "DSN=host=/var/run/postgresql dbname=orders\n")).toEqual([]);
    // A substituted host is judged like a substituted URL host: the sslmode is in the file.
    expect(ids(".env", "DSN=host=${PGHOST} dbname=orders sslmode=disable\n")).toEqual(["MW-TLS-002@1:high"]);
    // MySQL Connector/NET (SslMode None/Preferred/Required), a generic `host=` pair, free text.
    expect(ids(".env", "MYSQL=Server=mysql.prod.svc;Database=orders;Uid=app;SslMode=Preferred\n")).toEqual([]);
    expect(ids(".env", "PROXY=host=proxy.internal\nNOTE=host=a name=b\nLOGIN=host=idp.internal user=svc\n")).toEqual([]);
  });
});

// M1. Addresses an app binds, never dials: ASP.NET Core's `ASPNETCORE_URLS=http://+:80` (what
// Microsoft's .NET container images set before .NET 8, which moved to ASPNETCORE_HTTP_PORTS=8080:
// learn.microsoft.com/dotnet/core/compatibility/containers/8.0/aspnet-port; `*` and `+` are Kestrel's
// wildcard hosts, learn.microsoft.com/aspnet/core/fundamentals/servers/kestrel/endpoints),
// Kestrel's `Kestrel__Endpoints__<name>__Url`, and wildcard hosts (`0.0.0.0`, `[::]`) anywhere.
describe("M1: listen addresses are not plaintext endpoints", () => {
  it("wildcard hosts and Kestrel listen settings give no MW-TLS-007", () => {
    expect(ids("d.yaml", deployment({
      ASPNETCORE_URLS: "http://+:8080",
      LISTEN_ADDR: "http://0.0.0.0:8080",
      Kestrel__Endpoints__Http__Url: "http://*:5000",
      DOTNET_DASHBOARD_OTLP_ENDPOINT_URL: "http://[::]:18889",
      DOTNET_URLS: "http://+:80;https://+:443",
      APP_BIND: "http://127.0.0.1:9000",
    }))).toEqual([]);
  });

  it("a real endpoint is still reported, also when only its variable name says LISTEN or BIND", () => {
    expect(ids("d.yaml", deployment({ INVENTORY_URL: "http://inventory.prod.svc:8080", LDAP_BIND_URL: "ldap://ldap.corp.internal" })))
      .toEqual([`MW-TLS-007@${envLine(0)}:high`, `MW-TLS-007@${envLine(1)}:high`]);
  });
});

// M2. `[::1]` is IPv6 loopback: drift must read dapr.io/sidecar-listen-addresses as MW-K8S-001 does.
describe("M2: drift reads the sidecar listen addresses as MW-K8S-001 does", () => {
  const daprDeployment = (listen: string): string =>
    `apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: orders\nspec:\n  template:\n    metadata:\n      annotations:\n        dapr.io/enabled: "true"\n        dapr.io/app-id: orders\n        dapr.io/api-token-secret: dapr-api-token\n        dapr.io/sidecar-listen-addresses: "${listen}"\n    spec:\n      containers:\n        - name: orders\n          image: orders\n`;
  const listenRows = (staging: string, production: string): string[] => compareEnvironments(Object.entries({ staging, production }).map(([name, text]) => {
    const { corpus } = loadSources([{ file: "deploy.yaml", text: daprDeployment(text) }]);
    return { name, posture: collectPosture(corpus) };
  })).rows.filter((row) => row.aspect === "sidecar listen").map((row) => `${row.status} ${JSON.stringify(row.values)}`);

  it("[::1],127.0.0.1 is loopback: not weaker than 127.0.0.1, and the scan agrees", () => {
    expect(listenRows("[::1],127.0.0.1", "127.0.0.1")).toEqual(['differs ["[::1],127.0.0.1","127.0.0.1"]']);
    expect(ids("deploy.yaml", daprDeployment("[::1],127.0.0.1"))).toEqual([]);
  });

  it("0.0.0.0 and [::] are still weaker, as MW-K8S-001 reports them", () => {
    expect(listenRows("0.0.0.0", "127.0.0.1")).toEqual(['weaker ["0.0.0.0","127.0.0.1"]']);
    expect(listenRows("[::],127.0.0.1", "127.0.0.1")).toEqual(['weaker ["[::],127.0.0.1","127.0.0.1"]']);
    expect(ids("deploy.yaml", daprDeployment("[::],127.0.0.1"))).toEqual(["MW-K8S-001@12:high"]);
  });
});

// M4. Committed env templates: the dotenv convention (github.com/motdotla/dotenv README: "commit a
// .env.example", never the .env), Laravel's `.env.example` and Symfony's `.env.dist`: nothing loads them.
describe("M4: env templates (.env.example, .env.sample, .env.template, .env.dist) are low, with a note", () => {
  const text = "DATABASE_URL=postgres://app:Pr0d-pass-42@db.prod.internal:5432/app\nREDIS_URL=redis://redis.prod.internal:6379\nJWT_SECRET=k3y-9f8e7d6c5b4a\n";

  it("every finding of a template is low and says why; the same file as .env keeps its severities", () => {
    for (const name of [".env.example", ".env.sample", ".env.template", ".env.dist", ".env.defaults"]) {
      const result = auditSources([{ file: `app/${name}`, text }]);
      expect(result.findings.map((finding) => `${finding.ruleId}@${finding.line}:${finding.severity}`), name)
        .toEqual(["MW-SECRET-005@1:low", "MW-TLS-002@1:low", "MW-TLS-007@2:low", "MW-SECRET-005@3:low"]);
      for (const finding of result.findings) expect(finding.message, name).toMatch(/env template .*nothing loads it.*rotate it/);
    }
    expect(ids("app/.env", text)).toEqual(["MW-SECRET-005@1:high", "MW-TLS-002@1:high", "MW-TLS-007@2:high", "MW-SECRET-005@3:high"]);
    expect(ids("app/.env.production", text)).toEqual(["MW-SECRET-005@1:high", "MW-TLS-002@1:high", "MW-TLS-007@2:high", "MW-SECRET-005@3:high"]);
  });
});

// M5. Kafka's client setting `security.protocol` (kafka.apache.org/documentation, "security.protocol:
// Protocol used to communicate with brokers. Valid values are: PLAINTEXT, SSL, SASL_PLAINTEXT,
// SASL_SSL"), as env: Spring Boot's relaxed binding `SPRING_KAFKA_PROPERTIES_SECURITY_PROTOCOL`,
// `SPRING_KAFKA_SECURITY_PROTOCOL`, Kafka Connect's `CONNECT_SECURITY_PROTOCOL`, `KAFKA_SECURITY_PROTOCOL`.
describe("M5: Kafka PLAINTEXT / SASL_PLAINTEXT in env", () => {
  it("SASL_PLAINTEXT and PLAINTEXT are MW-TLS-006; SSL and SASL_SSL are quiet", () => {
    expect(findings("d.yaml", deployment({
      SPRING_KAFKA_BOOTSTRAP_SERVERS: "kafka-0.kafka.prod.svc:9092,kafka-1.kafka.prod.svc:9092",
      SPRING_KAFKA_PROPERTIES_SECURITY_PROTOCOL: "SASL_PLAINTEXT",
      SPRING_KAFKA_PROPERTIES_SASL_MECHANISM: "PLAIN",
      KAFKA_SECURITY_PROTOCOL: "plaintext",
    }))).toEqual([
      `MW-TLS-006@${envLine(1)}:high SPRING_KAFKA_PROPERTIES_SECURITY_PROTOCOL: SASL_PLAINTEXT (SASL credentials and messages in plaintext)`,
      `MW-TLS-006@${envLine(3)}:high KAFKA_SECURITY_PROTOCOL: plaintext (no TLS, no authentication)`,
    ]);
    expect(ids("d.yaml", deployment({ SPRING_KAFKA_SECURITY_PROTOCOL: "SASL_SSL", CONNECT_SECURITY_PROTOCOL: "SSL" }))).toEqual([]);
    // A broker's listener map and inter-broker setting are the broker's, not a client connection.
    expect(ids("d.yaml", deployment({ KAFKA_LISTENER_SECURITY_PROTOCOL_MAP: "PLAINTEXT:PLAINTEXT", KAFKA_SECURITY_INTER_BROKER_PROTOCOL: "PLAINTEXT" }))).toEqual([]);
  });

  it("low when every bootstrap server of the container is on loopback; also read in .env files", () => {
    expect(ids("d.yaml", deployment({ KAFKA_BOOTSTRAP_SERVERS: "localhost:9092", KAFKA_SECURITY_PROTOCOL: "PLAINTEXT" }))).toEqual([`MW-TLS-006@${envLine(1)}:low`]);
    expect(ids(".env", "KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT\n")).toEqual(["MW-TLS-006@1:high"]);
  });
});

// L1. A plaintext span exporter is MW-TLS-012 low in a Dapr Configuration (tracing.zipkin.endpointAddress):
// the same endpoint in container env (OpenTelemetry's OTEL_EXPORTER_OTLP_ENDPOINT / OTEL_EXPORTER_ZIPKIN_ENDPOINT,
// opentelemetry.io/docs/specs/otel/protocol/exporter and …/configuration/sdk-environment-variables) is low too.
describe("L1: telemetry exporters in env have MW-TLS-012's severity", () => {
  it("OTEL_EXPORTER_*_ENDPOINT, *ZIPKIN*, *JAEGER* over http:// are MW-TLS-007 low, said so", () => {
    const result = auditSources([{ file: "d.yaml", text: deployment({
      OTEL_EXPORTER_OTLP_ENDPOINT: "http://otel-collector.observability.svc:4318",
      OTEL_EXPORTER_ZIPKIN_ENDPOINT: "http://zipkin.observability.svc:9411/api/v2/spans",
      JAEGER_ENDPOINT: "http://jaeger.observability.svc:14268/api/traces",
      INVENTORY_URL: "http://inventory.prod.svc:8080",
    }) }]);
    expect(result.findings.map((finding) => `${finding.ruleId}@${finding.line}:${finding.severity}`))
      .toEqual([`MW-TLS-007@${envLine(0)}:low`, `MW-TLS-007@${envLine(1)}:low`, `MW-TLS-007@${envLine(2)}:low`, `MW-TLS-007@${envLine(3)}:high`]);
    expect(result.findings[0]?.message).toMatch(/telemetry exporter/);
  });
});

// L2. libpq-connect.html: "hostaddr … If hostaddr is specified … the value for host is ignored
// [for connecting]" (host then serves certificate verification and authentication), and a URI's
// query parameters (`?host=`) override its authority's host. Loopback lowering must follow the address dialled.
describe("L2: loopback means the address libpq dials", () => {
  it("host=localhost with hostaddr elsewhere, and postgres://localhost/?host=elsewhere, stay high", () => {
    const component = "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: pg\nspec:\n  type: state.postgresql\n  version: v1\n  metadata:\n  - name: connectionString\n    value: \"host=localhost hostaddr=10.20.30.40 user=dapr dbname=state sslmode=disable\"\n";
    expect(ids("components/pg.yaml", component)).toEqual(["MW-TLS-002@10:high"]);
    expect(findings("app/.env", "DATABASE_URL=postgres://localhost/app?host=pg.prod.svc&sslmode=disable\n"))
      .toEqual(["MW-TLS-002@1:high DATABASE_URL: sslmode=disable (postgres://localhost, host=pg.prod.svc)"]);
    expect(ids("app/.env", "DSN=host=localhost hostaddr=10.20.30.40 dbname=app sslmode=disable\n")).toEqual(["MW-TLS-002@1:high"]);
    // Still low when what is dialled is loopback.
    expect(ids("app/.env", "DATABASE_URL=postgres://db.prod.svc/app?hostaddr=127.0.0.1&sslmode=disable\n")).toEqual(["MW-TLS-002@1:low"]);
    expect(ids("components/pg.yaml", component.replace("10.20.30.40", "127.0.0.1"))).toEqual(["MW-TLS-002@10:low"]);
  });
});

// L4. Drift compares the connection posture of container env (and compose services, env files,
// ConfigMaps), as it does a component's: no MW-TLS finding ⇢ any.
describe("L4: drift compares env connections (TLS (env) row)", () => {
  const withUrl = (url: string): string => deployment({ DATABASE_URL: url });
  const rows = (staging: string, production: string, file = "deploy.yaml"): string[] => compareEnvironments(Object.entries({ staging, production }).map(([name, text]) => {
    const { corpus } = loadSources([{ file, text }]);
    return { name, posture: collectPosture(corpus) };
  })).rows.filter((row) => row.aspect === "TLS (env)").map((row) => `${row.status} ${row.subject} ${JSON.stringify(row.values)}`);

  it("staging's sslmode=disable against production's verify-full is weaker", () => {
    expect(rows(withUrl("postgres://orders@pg.shop.svc/orders?sslmode=disable"), withUrl("postgres://orders@pg.shop.svc/orders?sslmode=verify-full")))
      .toEqual(['weaker Deployment orders ["off/weak (MW-TLS-002)","no finding"]']);
    expect(rows(withUrl("postgres://orders@pg.shop.svc/orders?sslmode=verify-full"), withUrl("postgres://orders@pg.shop.svc/orders?sslmode=verify-full")))
      .toEqual(['same Deployment orders ["no finding","no finding"]']);
  });

  it("env files and ConfigMaps too; holders without connection settings give no row", () => {
    expect(rows("REDIS_URL=redis://cache.prod.svc:6379\n", "REDIS_URL=rediss://cache.prod.svc:6380\n", ".env")).toEqual(['weaker env-file .env ["off/weak (MW-TLS-007)","no finding"]']);
    expect(rows(deployment({ LOG_LEVEL: "debug" }), deployment({ LOG_LEVEL: "info" }))).toEqual([]);
  });
});

// L3. A connection URL passed to the container as an argument (`args: ["--source", "postgres://…"]`,
// `--source=postgres://…`) is dialled like one in env. Only whole elements that are (or whose
// `--flag=` value is) a database or broker URL are read: `http://` arguments (external URLs,
// identifiers) and shell strings (`sh -c "…"`) are not.
describe("L3: database and broker URLs in container args/command", () => {
  const job = (how: string): string => `apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: backup\nspec:\n  template:\n    spec:\n      containers:\n        - name: backup\n          image: backup:1.0\n${how}\n`;
  const url = "postgres://backup:BackupPass9@pg.prod.svc/app?sslmode=disable";

  it("a URL element and a --flag=URL element are read like env values, at their line", () => {
    expect(findings("job.yaml", job(`          args: ["--source", "${url}"]`)))
      .toEqual(["MW-SECRET-005@11:high args[1]: postgres://backup:****@pg.prod.svc/app?sslmode=disable", "MW-TLS-002@11:high args[1]: sslmode=disable (postgres://pg.prod.svc)"]);
    expect(ids("job.yaml", job(`          command:\n            - /bin/backup\n            - --broker=amqp://rabbit.prod.svc:5672`))).toEqual(["MW-TLS-007@13:high"]);
  });

  it("http:// arguments and shell strings are not read", () => {
    expect(ids("job.yaml", job(`          args: ["--web.external-url=http://prometheus.example.org", "--upstream", "http://backend:8080"]`))).toEqual([]);
    expect(ids("job.yaml", job(`          command: ["sh", "-c", "pg_dump ${url} > /backup/app.sql"]`))).toEqual([]);
  });
});
