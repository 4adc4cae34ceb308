import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { connect, constants } from "node:http2";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { pino } from "pino";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { initAnchors } from "../../src/ca/anchors.ts";
import { startCaServer, type CaServer } from "../../src/ca/server.ts";
import { issueJoinToken } from "../../src/ca/tokens.ts";
import { caConfigSchema } from "../../src/config/ca.ts";
import { createCsr } from "../../src/pki/csr.ts";
import { generateKeyPair } from "../../src/pki/keys.ts";
import { frameMessage } from "../../src/protocol/grpc-unary.ts";
import { encodeSignRequest, SIGN_CERTIFICATE_PATH, TokenValidator } from "../../src/protocol/sentry.ts";
import { openSqliteStore } from "../../src/store/sqlite.ts";
import type { Store } from "../../src/store/store.ts";
import { metricValue } from "../proxy/fixtures.ts";

// daprd gives each SignCertificate attempt 3 s and retries up to 5 times with the same token
// (dapr/dapr pkg/security/sentry.go: sentrySignTimeout, retry.WithPerRetryTimeout). A call the
// client has given up on (reset stream, closed connection, grpc-timeout passed) must not spend a
// single-use join token's use on a certificate nobody will receive, or the retry is refused
// E_TOKEN_USED and the daprd cannot start. The store is held at the spend until the CA has seen
// the client go (its request's abort signal), so nothing here depends on timing.

const TD = "cancel.test";
const SENTRY_ID = `spiffe://${TD}/ns/dapr-system/dapr-sentry`;
const PROTO = fileURLToPath(new URL("../dapr/sentry.proto", import.meta.url));

describe("a SignCertificate call the client gave up on does not spend its join token", () => {
  let dir: string;
  let inner: Store;
  let server: CaServer;
  let client: InstanceType<grpc.ServiceClientConstructor>;
  let bundlePem: string;
  /** What the held spend waits for when the CA passes it no signal (the code before the fix). */
  let fallback: Promise<unknown>;
  let entered: () => void;
  let spendEntered: Promise<void>;
  /** Whether the next spend is held (the first attempt of each test; its retry goes straight through). */
  let holdNext = false;
  const signalsSeen: (AbortSignal | undefined)[] = [];

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "meshward-cancel-"));
    await initAnchors({ dir: join(dir, "ca"), trustDomain: TD, now: new Date() });
    inner = openSqliteStore(join(dir, "ca", "ca.db"));
    // The store is the real one, with the spend held (a busy SQLite, a PostgreSQL failover):
    // it goes on once the request's signal is aborted, as the CA sees the client leave.
    const held = new Proxy(inner, {
      get(target, prop, receiver) {
        const value = Reflect.get(target, prop, receiver) as unknown;
        if (prop !== "recordIssuanceSpendingToken") return typeof value === "function" ? value.bind(target) : value;
        return async (...args: Parameters<Store["recordIssuanceSpendingToken"]>) => {
          if (!holdNext) return target.recordIssuanceSpendingToken(...args);
          holdNext = false;
          const signal = args[3]?.signal;
          signalsSeen.push(signal);
          entered();
          if (signal === undefined) await fallback;
          else if (!signal.aborted) await new Promise((resolve) => signal.addEventListener("abort", resolve, { once: true }));
          return target.recordIssuanceSpendingToken(...args);
        };
      },
    });
    server = await startCaServer({
      dir: join(dir, "ca"),
      config: caConfigSchema.parse({ listen: "127.0.0.1:0", servingSpiffeId: SENTRY_ID, signingWorkers: 0 }),
      logger: pino({ level: "silent" }),
      store: held,
    });
    bundlePem = readFileSync(join(dir, "ca", "bundle.pem"), "utf8");
    const definition = protoLoader.loadSync(PROTO, { keepCase: false, longs: Number, enums: String, defaults: false, oneofs: true });
    const CA = (grpc.loadPackageDefinition(definition) as unknown as { dapr: { proto: { sentry: { v1: { CA: grpc.ServiceClientConstructor } } } } }).dapr.proto.sentry.v1.CA;
    client = new CA(server.address, grpc.credentials.createSsl(Buffer.from(bundlePem), null, null, { checkServerIdentity: () => undefined }), {
      // daprd dials Sentry by name; Node 26 refuses an IP address as the TLS server name.
      "grpc.ssl_target_name_override": "dapr-sentry.dapr-system.svc.cluster.local",
    });
  });

  afterAll(async () => {
    client?.close();
    await server?.close();
    await inner?.close();
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  beforeEach(() => {
    spendEntered = new Promise<void>((resolve) => (entered = resolve));
    fallback = Promise.resolve();
    holdNext = true;
  });

  const newToken = async (appId: string) =>
    (await issueJoinToken(inner, { spiffeId: `spiffe://${TD}/ns/default/${appId}`, ttlMs: 3_600_000, uses: 1 })).token;

  const request = async (appId: string, token: string) => ({
    certificateSigningRequest: Buffer.from(await createCsr({ keyPair: generateKeyPair() })),
    id: appId,
    token,
    namespace: "default",
    tokenValidator: "JWKS",
  });

  const usesLeft = async (appId: string) => (await inner.listTokens()).find((t) => t.spiffeId.endsWith(`/${appId}`))?.usesLeft;
  const issued = async (appId: string) => (await inner.listIssuances({ spiffeId: `spiffe://${TD}/ns/default/${appId}` })).length;

  /** Calls SignCertificate; resolves with the gRPC status name. */
  const call = (message: object, options: grpc.CallOptions, onCall: (c: grpc.ClientUnaryCall) => void = () => undefined) =>
    new Promise<string>((resolve) => {
      const c = (client as unknown as { SignCertificate: (m: object, o: grpc.CallOptions, cb: (e: grpc.ServiceError | null) => void) => grpc.ClientUnaryCall }).SignCertificate(
        message,
        options,
        (error) => resolve(error ? grpc.status[error.code]! : "OK"),
      );
      onCall(c);
    });

  /** A raw SignCertificate stream with the client's deadline `grpcTimeout` and no reset of its own (a caller that never gives up). */
  const signStreamWithDeadline = (grpcTimeout: string) => {
    const session = connect(`https://${server.address}`, { ca: bundlePem, servername: "dapr-sentry.test", checkServerIdentity: () => undefined });
    session.on("error", () => undefined);
    const stream = session.request({
      [constants.HTTP2_HEADER_METHOD]: "POST",
      [constants.HTTP2_HEADER_PATH]: SIGN_CERTIFICATE_PATH,
      [constants.HTTP2_HEADER_CONTENT_TYPE]: "application/grpc",
      te: "trailers",
      "grpc-timeout": grpcTimeout,
    });
    const trailers = new Promise<Record<string, unknown>>((resolve) => stream.once("trailers", (t) => resolve(t as Record<string, unknown>)));
    stream.on("error", () => undefined);
    stream.resume();
    return { session, stream, trailers };
  };

  it("a call cancelled while the store is busy: CANCELLED, the use stays, the retry is issued", async () => {
    const token = await newToken("orders");
    let clientDone!: Promise<string>;
    // The code before the fix passed no signal: its spend goes on once the client has gone.
    fallback = new Promise((resolve) => setImmediate(resolve)).then(() => clientDone);
    clientDone = call(await request("orders", token), {}, (c) => void spendEntered.then(() => c.cancel()));
    expect(await clientDone).toBe("CANCELLED");
    expect(await call(await request("orders", token), {})).toBe("OK");
    expect(await usesLeft("orders")).toBe(0);
    expect(await issued("orders")).toBe(1); // the retry's certificate only: none logged for the cancelled call
    expect(signalsSeen.at(-1)).toBeDefined();
    expect(metricValue(await server.registry.metrics(), "meshward_ca_sign_requests_total", { result: "refused", reason: "E_REQUEST_CANCELLED" })).toBe(1);
  });

  it("a call whose deadline passes while the store is busy (daprd's 3 s per attempt): DEADLINE_EXCEEDED, the retry is issued", async () => {
    const token = await newToken("checkout");
    let clientDone!: Promise<string>;
    fallback = new Promise((resolve) => setImmediate(resolve)).then(() => clientDone);
    // A short deadline: the store is held until the CA sees it pass or the stream reset.
    clientDone = call(await request("checkout", token), { deadline: Date.now() + 300 });
    expect(await clientDone).toBe("DEADLINE_EXCEEDED");
    expect(await call(await request("checkout", token), {})).toBe("OK");
    expect(await usesLeft("checkout")).toBe(0);
    expect(await issued("checkout")).toBe(1);
  });

  it("the CA keeps the client's grpc-timeout itself: a caller that never resets gets DEADLINE_EXCEEDED (E_REQUEST_TIMEOUT) and keeps its use", async () => {
    const token = await newToken("payments");
    const timedOutBefore = metricValue(await server.registry.metrics(), "meshward_ca_sign_requests_total", { result: "refused", reason: "E_REQUEST_TIMEOUT" }) ?? 0;
    const { session, stream, trailers } = signStreamWithDeadline("200m");
    try {
      const message = encodeSignRequest({
        id: "payments",
        token,
        trustDomain: "",
        namespace: "default",
        certificateSigningRequest: Buffer.from(await createCsr({ keyPair: generateKeyPair() })),
        tokenValidator: TokenValidator.JWKS,
      });
      stream.end(frameMessage(message));
      // Before the fix no signal came, and nothing stopped the spend.
      const answered = await trailers;
      expect(answered["grpc-status"]).toBe("4");
      expect(answered["meshward-error-code"]).toBe("E_REQUEST_TIMEOUT");
    } finally {
      session.destroy();
    }
    expect(await usesLeft("payments")).toBe(1);
    expect(await issued("payments")).toBe(0);
    // The whole request had arrived: the authority had the call and counts it; it was no refusal
    // before attestation (review today4 LOW-1: it was counted in both).
    const text = await server.registry.metrics();
    expect(metricValue(text, "meshward_ca_sign_requests_total", { result: "refused", reason: "E_REQUEST_TIMEOUT" })).toBe(timedOutBefore + 1);
    expect(metricValue(text, "meshward_ca_api_requests_refused_total", { reason: "client_deadline" })).toBe(0);
    expect(await call(await request("payments", token), {})).toBe("OK");
    expect(await usesLeft("payments")).toBe(0);
  });

  it("a client deadline that passes while the request is still arriving is a refusal before attestation (client_deadline)", async () => {
    const { session, stream, trailers } = signStreamWithDeadline("200m");
    try {
      stream.write(Buffer.from([0, 0, 0, 1, 0])); // a message prefix, its body never sent
      expect((await trailers)["meshward-error-code"]).toBe("E_REQUEST_TIMEOUT");
    } finally {
      session.destroy();
    }
    expect(metricValue(await server.registry.metrics(), "meshward_ca_api_requests_refused_total", { reason: "client_deadline" })).toBe(1);
  });
});
