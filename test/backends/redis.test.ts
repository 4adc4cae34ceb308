import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connectMtls } from "../../src/transport/index.ts";
import { exec } from "../helpers/exec.ts";
import { startRedisTls, type RunningRedis } from "../helpers/redis.ts";
import { foreignIdentity, quietTlsLogger, startMeshCa, tlsFiles, type ForeignIdentity, type IdentityFiles, type MeshCa } from "./fixtures.ts";
import { pingOver, tlsPing } from "./resp.ts";

// Real redis-server 7 with TLS only (`port 0`, `tls-port`, `tls-auth-clients yes`): its server
// certificate and the roots it trusts for clients both come from a real meshward CA.
const TD = "redis.backends.test";
let ca: MeshCa | undefined;
let redis: RunningRedis | undefined;
let serverFiles: IdentityFiles;
let clientFiles: IdentityFiles;
let clientSource: Awaited<ReturnType<MeshCa["identity"]>>;
let foreign: ForeignIdentity;

beforeAll(async () => {
  ca = await startMeshCa(TD);
  const serverSource = await ca.identity("redis", { dnsNames: ["localhost"] });
  serverFiles = await ca.sink("redis", serverSource);
  clientSource = await ca.identity("app");
  clientFiles = await ca.sink("app", clientSource);
  foreign = await foreignIdentity(ca.dir, TD, "app", ["localhost"]);
  redis = await startRedisTls({ certFile: serverFiles.cert, keyFile: serverFiles.key, caFile: serverFiles.bundle });
});

afterAll(async () => {
  await redis?.stop();
  await ca?.close();
});

const base = () => ({ host: "127.0.0.1", port: redis!.port, servername: "localhost", minVersion: "TLSv1.2" as const });

describe("Redis with tls-auth-clients yes, secured by meshward identities", () => {
  it("answers PONG to a client presenting its meshward certificate (and the client verifies Redis by host name)", async () => {
    const { cert, key, ca: roots } = tlsFiles(clientFiles);
    const result = await tlsPing({ ...base(), cert, key, ca: roots });
    expect(result, redis!.log()).toEqual({ reply: "+PONG", error: undefined });
  });

  it("works with the SDK client, which checks Redis's SPIFFE ID", async () => {
    const socket = await connectMtls({ identity: clientSource, expect: `spiffe://${TD}/ns/backends/redis`, port: redis!.port, servername: "localhost", logger: quietTlsLogger });
    expect(socket.peer.spiffeId).toBe(`spiffe://${TD}/ns/backends/redis`);
    expect(await pingOver(socket)).toEqual({ reply: "+PONG", error: undefined });
  });

  it("the SDK client refuses Redis when it expects another SPIFFE ID", async () => {
    const error = await connectMtls({ identity: clientSource, expect: `spiffe://${TD}/ns/backends/other`, port: redis!.port, logger: quietTlsLogger }).then(
      () => undefined,
      (e: unknown) => e as { code?: string },
    );
    expect(error?.code).toBe("E_SPIFFE_MISMATCH");
  });

  it("refuses a client without a certificate", async () => {
    const { ca: roots } = tlsFiles(clientFiles);
    const result = await tlsPing({ ...base(), ca: roots });
    expect(result.reply).toBeUndefined();
    // Redis (not our client) ends the handshake: TLS 1.3 alert 116 certificate_required.
    expect(result.error).toMatch(/CERTIFICATE_REQUIRED/);
  });

  it("refuses a client whose certificate (same shape, same trust domain name) chains to another CA", async () => {
    const { cert, key } = tlsFiles(foreign.files);
    const { ca: roots } = tlsFiles(clientFiles);
    const result = await tlsPing({ ...base(), cert, key, ca: roots });
    expect(result.reply).toBeUndefined();
    expect(result.error).toMatch(/ALERT_UNKNOWN_CA/); // alert 48 from Redis
  });

  it("refuses TLS 1.1", async () => {
    const { cert, key, ca: roots } = tlsFiles(clientFiles);
    const result = await tlsPing({ ...base(), cert, key, ca: roots, minVersion: "TLSv1", maxVersion: "TLSv1.1", ciphers: "DEFAULT@SECLEVEL=0" });
    expect(result.reply).toBeUndefined();
    expect(result.error).toMatch(/alert protocol version/); // alert 70 from Redis, not a local refusal
  });

  it("redis-cli --tls: PONG with the meshward files, refused without a client certificate", async () => {
    const common = ["--tls", "-h", "127.0.0.1", "-p", String(redis!.port), "--sni", "localhost", "--cacert", clientFiles.bundle];
    const ok = await exec("redis-cli", [...common, "--cert", clientFiles.cert, "--key", clientFiles.key, "PING"]);
    expect(ok.stdout.trim(), ok.stderr).toBe("PONG");
    const refused = await exec("redis-cli", [...common, "PING"]);
    expect(refused.stdout.trim()).not.toBe("PONG");
  });
});
