import { X509Certificate } from "node:crypto";
import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir, userInfo } from "node:os";
import { join } from "node:path";
import type { PeerCertificate } from "node:tls";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runCli, startCli, type LongRunning } from "../helpers/cli.ts";
import { POSTGRES_BIN, postgresServerAccount, startPostgres, type RunningPostgres } from "../helpers/postgres.ts";

/*
 * docs/backends.md "PostgreSQL: one role per workload", run as written against Debian's real
 * PostgreSQL 15 (started by the test, as an unprivileged user when the tests run as root):
 *
 * - the server's certificate comes from a real `meshward identity --out DIR --owner <pg user>
 *   --mode 0600 --on-rotate '… pg_ctl reload …'` process, and PostgreSQL reads its key straight
 *   from DIR (it insists that the key belongs to its own user). With 20 s certificates the
 *   identity renews during the test, and the reload makes the server present the new one;
 * - clients get certificates with `meshward token create --common-name` + `meshward cert issue`,
 *   and pg_hba's plain `cert` method (clientcert=verify-full, CN = the role) lets CN=orders in as
 *   role orders only: CN=inventory and a certificate without CN are refused as orders.
 */
const TD = "pg-cn.backends.test";
const account = postgresServerAccount();
/** The user the server runs as: PostgreSQL's key file must be owned by it. */
const pgUser = account?.name ?? userInfo().username;

let work: string;
let caDir: string;
let ca: LongRunning | undefined;
let identity: LongRunning | undefined;
let server: RunningPostgres | undefined;
let caAddress: string;
const serverDir = () => join(work, "postgres-tls");

async function cli(args: string[]): Promise<string> {
  const result = await runCli(args);
  if (result.code !== 0) throw new Error(`meshward ${args.join(" ")} exited ${result.code}\n${result.stdout}\n${result.stderr}`);
  return result.stdout;
}

async function token(appId: string, ...extra: string[]): Promise<string> {
  return (await cli(["token", "create", "--dir", caDir, "--namespace", "shop", "--app-id", appId, ...extra])).trim().split("\n").at(-1) as string;
}

/** `meshward cert issue` into WORK/<name>; returns the files as PEM strings for the pg client. */
async function client(name: string, appId: string, ...tokenFlags: string[]): Promise<{ cert: string; key: string; ca: string }> {
  const out = join(work, name);
  await cli(["cert", "issue", "--ca", caAddress, "--bundle", join(caDir, "bundle.pem"), "--token", await token(appId, ...tokenFlags), "--out", out]);
  return { cert: readFileSync(join(out, "cert.pem"), "utf8"), key: readFileSync(join(out, "key.pem"), "utf8"), ca: readFileSync(join(out, "bundle.pem"), "utf8") };
}

async function connect(user: string, files: { cert: string; key: string; ca: string }): Promise<{ role?: string; dn?: string; serverSerial?: string; error?: string }> {
  let serverSerial: string | undefined;
  const c = new pg.Client({
    host: "127.0.0.1",
    port: server!.port,
    user,
    database: "postgres",
    connectionTimeoutMillis: 5_000,
    ssl: {
      ...files,
      servername: "localhost",
      rejectUnauthorized: true,
      // Called after the chain verified: record which server certificate was presented.
      checkServerIdentity: (_host: string, cert: PeerCertificate) => {
        serverSerial = cert.serialNumber.toUpperCase();
        return undefined;
      },
    },
  });
  c.on("error", () => undefined);
  try {
    await c.connect();
    const result = await c.query<{ role: string; dn: string }>("SELECT current_user AS role, ssl_client_dn() AS dn");
    return { role: result.rows[0]!.role, dn: result.rows[0]!.dn, ...(serverSerial !== undefined ? { serverSerial } : {}) };
  } catch (error) {
    return { error: (error as Error).message };
  } finally {
    await Promise.race([c.end().catch(() => undefined), new Promise((resolve) => setTimeout(resolve, 2_000).unref())]);
  }
}

const serverCert = () => new X509Certificate(readFileSync(join(serverDir(), "cert.pem")));

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), "meshward-pg-cn-"));
  chmodSync(work, 0o755); // the server user reads its files below it
  caDir = join(work, "ca");
  await cli(["ca", "init", "--trust-domain", TD, "--dir", caDir]);
  ca = await startCli(["ca", "serve", "--dir", caDir, "--listen", "127.0.0.1:0", "--workload-ttl", "20s"], /listening on (\S+)/);
  caAddress = (ca.stdout().match(/listening on (\S+)/) as RegExpMatchArray)[1] as string;

  // The reload command is a script because the data directory exists only once the server
  // does; until then it does nothing. Its content is the docs' command.
  const reload = join(work, "reload.sh");
  writeFileSync(reload, "exit 0\n");
  identity = await startCli(
    [
      "identity", "--ca", caAddress, "--bundle", join(caDir, "bundle.pem"), "--token", await token("postgres", "--dns-name", "localhost", "--common-name"),
      "--namespace", "shop", "--app-id", "postgres", "--dns-name", "localhost",
      "--out", serverDir(), "--owner", pgUser, "--mode", "0600", "--on-rotate", `/bin/sh ${reload}`,
      "--status", "127.0.0.1:0", "--bundle-refresh-interval", "5s",
    ],
    /identity ready: /,
  );
  server = await startPostgres({
    hbaLines: ["hostssl all all 127.0.0.1/32 cert", "host all all 0.0.0.0/0 reject"],
    settings: {
      ssl: "on",
      ssl_cert_file: join(serverDir(), "cert.pem"),
      ssl_key_file: join(serverDir(), "key.pem"),
      ssl_ca_file: join(serverDir(), "bundle.pem"),
      ssl_min_protocol_version: "TLSv1.2",
    },
  });
  const pgCtl = `${POSTGRES_BIN}/pg_ctl reload -D ${server.dataDir}`;
  writeFileSync(reload, account !== undefined ? `exec runuser -u ${pgUser} -- ${pgCtl}\n` : `exec ${pgCtl}\n`);
  await server.adminQuery("CREATE ROLE orders LOGIN");
  await server.adminQuery("CREATE ROLE inventory LOGIN");
  await server.adminQuery("CREATE EXTENSION sslinfo");
}, 90_000);

afterAll(async () => {
  await server?.stop();
  await identity?.stop();
  await ca?.stop();
  if (work) rmSync(work, { recursive: true, force: true });
});

describe("PostgreSQL: one role per workload (CN = app id) and a server key owned by the postgres user", () => {
  it("identity --owner/--mode writes the files as the server's user, with the key private", () => {
    const uid = account?.uid ?? process.getuid!();
    for (const file of ["cert.pem", "key.pem", "bundle.pem"]) expect(statSync(join(serverDir(), file)).uid, file).toBe(uid);
    expect(statSync(join(serverDir(), "key.pem")).mode & 0o777).toBe(0o600);
    expect(statSync(join(serverDir(), "cert.pem")).mode & 0o777).toBe(0o644);
    expect(serverCert().subject).toBe("O=SPIFFE\nCN=postgres");
  });

  it("CN=orders logs in as role orders; CN=inventory and a certificate without CN are refused as orders", async () => {
    const orders = await client("orders", "orders", "--common-name");
    const inventory = await client("inventory", "inventory", "--common-name");
    const plain = await client("orders-no-cn", "orders"); // same app id, token without --common-name

    expect(new X509Certificate(orders.cert).subject).toBe("O=SPIFFE\nCN=orders");
    expect(new X509Certificate(plain.cert).subject).toBe("O=SPIFFE");

    const asOrders = await connect("orders", orders);
    expect(asOrders.error, server!.log()).toBeUndefined();
    expect(asOrders).toMatchObject({ role: "orders", dn: "/O=SPIFFE/CN=orders" });

    const inventoryAsOrders = await connect("orders", inventory);
    expect(inventoryAsOrders.role).toBeUndefined();
    expect(inventoryAsOrders.error).toMatch(/certificate authentication failed for user "orders"/);
    expect(await connect("inventory", inventory)).toMatchObject({ role: "inventory", dn: "/O=SPIFFE/CN=inventory" });

    const plainAsOrders = await connect("orders", plain);
    expect(plainAsOrders.role).toBeUndefined();
    expect(plainAsOrders.error).toMatch(/certificate authentication failed for user "orders"|does not contain a common name/);
  });

  it("after a renewal the server presents the new certificate (the on-rotate reload ran as the server's user), still with its CN", async () => {
    const orders = await client("orders-2", "orders", "--common-name");
    let first = serverCert().serialNumber;
    let presented = (await connect("orders", orders)).serverSerial;
    // A renewal can land between reading the file and connecting (seen on a loaded machine): read both again.
    for (let retry = 0; retry < 3 && presented !== first; retry++) {
      first = serverCert().serialNumber;
      presented = (await connect("orders", orders)).serverSerial;
    }
    expect(presented).toBe(first);
    const deadline = Date.now() + 45_000;
    while (serverCert().serialNumber === first) {
      if (Date.now() > deadline) throw new Error("the identity did not renew the server certificate");
      await new Promise((r) => setTimeout(r, 250));
    }
    const renewed = serverCert();
    expect(renewed.subject).toBe("O=SPIFFE\nCN=postgres"); // the renewal (SVID attestation) kept the CN
    expect(statSync(join(serverDir(), "key.pem")).mode & 0o777).toBe(0o600);
    expect(statSync(join(serverDir(), "key.pem")).uid).toBe(account?.uid ?? process.getuid!());
    let seen: string | undefined;
    const until = Date.now() + 20_000;
    while (Date.now() < until) {
      const result = await connect("orders", orders);
      seen = result.serverSerial;
      // A later renewal may already have replaced `renewed`: any serial other than the first proves the reload.
      if (seen !== undefined && seen !== first) break;
      await new Promise((r) => setTimeout(r, 250));
    }
    expect(seen, server!.log()).not.toBe(first);
    expect(server!.log()).toMatch(/received SIGHUP, reloading configuration files/);
  }, 90_000);
});

describe("identity --owner / --mode refuse bad input before spending the token", () => {
  it("an unknown user, a world-readable mode and --owner without --out are refused with a message", async () => {
    const base = ["identity", "--ca", "127.0.0.1:1", "--bundle", join(caDir, "bundle.pem"), "--token", "mwjt_unused"];
    const unknown = await runCli([...base, "--out", join(work, "x"), "--owner", "no-such-user-meshward"]);
    expect(unknown.code).not.toBe(0);
    expect(unknown.stderr).toContain('no user named "no-such-user-meshward"');
    const open = await runCli([...base, "--out", join(work, "x"), "--mode", "0644"]);
    expect(open.code).not.toBe(0);
    expect(open.stderr).toContain("the key file must stay private");
    const noOut = await runCli([...base, "--workload-api-socket", join(work, "s.sock"), "--owner", pgUser]);
    expect(noOut.code).not.toBe(0);
    expect(noOut.stderr).toContain("--owner and --mode apply to the files in --out");
    for (const r of [unknown, open, noOut]) expect(r.stderr).not.toMatch(/\n\s+at /);
  });
});
