/**
 * `_method` in a POST body, against the real frameworks that honour it: Rack::MethodOverride
 * (Debian's ruby-rack 2.2, under WEBrick; Rails puts it in every app) and Symfony HttpFoundation
 * (Debian's php-symfony-http-foundation 5.4, under `php -S`; Laravel turns its override on), and
 * Express 4.22 with its body parsers and method-override 3 (the devDependencies, apps/express_app.mjs,
 * the app of the differential suite), each behind its own inbound sidecar. The policy lets `orders` POST to /items/** and nothing else
 * there, and use any method on /open/**.
 *
 * On /open the policy's answer does not depend on the method, so nothing is read and the apps
 * show what each body means to them (DELETE, PUT…): the control. On /items every such body must
 * be refused by the sidecar before the app has it: the apps' own records must never show a
 * method other than POST there. Laravel's JSON reading (Illuminate\Http\Request::createFromBase)
 * is not packaged for Debian: the JSON inspector's cases are in test/proxy/method-override-body.test.ts.
 */
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { startMeshCa, startTestSidecar, TD } from "../proxy/fixtures.ts";
import type { MeshCa, TestSidecarWithApp } from "../proxy/fixtures.ts";
import { startChildApp } from "./helpers/apps.ts";
import type { AppRecord } from "./helpers/apps.ts";
import { h1Exchange, h2Exchange } from "./helpers/mesh.ts";
import type { Answer, MeshApp, SecurityMesh } from "./helpers/mesh.ts";
import { readFileSync, writeFileSync } from "node:fs";
import { brotliCompressSync, deflateSync, gzipSync } from "node:zlib";
import { join } from "node:path";
import { createSecureContext, type SecureContext } from "node:tls";

const APPS_DIR = fileURLToPath(new URL("./apps/", import.meta.url));

const POLICY = `kind: Configuration
spec:
  accessControl:
    defaultAction: deny
    trustDomain: ${TD}
    policies:
      - appId: orders
        namespace: shop
        trustDomain: ${TD}
        defaultAction: deny
        operations:
          - name: /items/**
            httpVerb: ["POST"]
            action: allow
          - name: /open/**
            httpVerb: ["*"]
            action: allow
`;

interface Ran {
  readonly method: string;
  readonly path: string;
  readonly body: number;
}

interface Framework {
  readonly name: "rack" | "symfony";
  readonly sidecar: TestSidecarWithApp;
  readonly records: () => Ran[];
  /** The app's own port (plaintext, no sidecar). */
  readonly port: number;
  close(): Promise<void>;
}

const FORM = "application/x-www-form-urlencoded";

/** Past 16 KiB a Content-Length body bypasses llhttp (RAW_BODY_MIN): the relay reads it all the same. */
const PAD = `pad=${"x".repeat(40_000)}`;

const PUT_PART_B = '--B\r\nContent-Disposition: form-data; name="_method"\r\n\r\nPUT\r\n--B--\r\n';

/** A multipart body (boundary B) of one part with this head and DELETE as its content. */
const mp = (head: string) => `--B\r\n${head}\r\n\r\nDELETE\r\n--B--\r\n`;
const MP = "multipart/form-data; boundary=B";
/** Found by review (stop 36): heads both apps read a `_method` name in where a simpler reading did not. */
const SHARED_HEADS = [
  // An unclosed quote on an earlier line must not swallow the real name.
  'X-Foo: name="\r\nContent-Disposition: form-data; name="_method"',
  // The boundary inside a head line (found by the second review, stop 36).
  'Content-Disposition: form-data--B--; name="_method"',
  // PHP splits parameters at ';' outside '…' too, Rack takes the last `; name=` (the third review).
  `Content-Disposition: form-data; a='; name="'; name=_method; b="`,
];
const FAKE_DELIMITER = '--B\r\nContent-Disposition: form-data; name="a"\r\n\r\nx--B name="\r\n--B\r\nContent-Disposition: form-data; name="_method"\r\n\r\nDELETE\r\n--B--\r\n';

/** Bodies each framework runs as another method than POST (the control proves it), with the Content-Type they need. */
const OVERRIDES: Readonly<Record<Framework["name"], readonly { readonly type: string | undefined; readonly body: string; readonly runs: string }[]>> = {
  rack: [
    { type: FORM, body: "_method=DELETE", runs: "DELETE" },
    { type: FORM, body: "a=1&%5Fmethod=put", runs: "PUT" },
    { type: FORM, body: `${PAD}&_method=DELETE`, runs: "DELETE" },
    // Rack parses a POST without Content-Type as a form (Rack::Request#form_data?).
    { type: undefined, body: "_method=DELETE", runs: "DELETE" },
    { type: "multipart/form-data; boundary=B", body: '--B\r\nContent-Disposition: form-data; name="_method"\r\n\r\nPATCH\r\n--B--\r\n', runs: "PATCH" },
    { type: "multipart/mixed; boundary=B", body: PUT_PART_B, runs: "PUT" },
    // Rack's boundary stops at '"' (Rack::Multipart::Parser MULTIPART): the parts are delimited by --B.
    { type: 'multipart/form-data; boundary=B"x', body: PUT_PART_B, runs: "PUT" },
    // Rack keys `[_method` and `_method]` as `_method` (Rack::QueryParser#normalize_params).
    { type: FORM, body: "_method]=DELETE", runs: "DELETE" },
    { type: FORM, body: "[_method=DELETE", runs: "DELETE" },
    { type: MP, body: mp('Content-Disposition: form-data; name="[_method"'), runs: "DELETE" },
    // A part named by its Content-ID, and a head Rack ends only at CRLF CRLF.
    { type: MP, body: mp("Content-ID: _method"), runs: "DELETE" },
    { type: MP, body: mp("Content-Disposition: form-data\n\n; name=_method"), runs: "DELETE" },
    ...SHARED_HEADS.map((head) => ({ type: MP, body: mp(head), runs: "DELETE" })),
    { type: MP, body: FAKE_DELIMITER, runs: "DELETE" },
    // Rack looks for `Content-Disposition:` anywhere in the head, and takes the last `; name=`, in quotes too.
    { type: MP, body: mp("X-Content-Disposition: form-data; name=_method"), runs: "DELETE" },
    { type: MP, body: mp("X-Content-ID: _method"), runs: "DELETE" },
    { type: MP, body: mp('Content-Disposition: form-data; name="x; name=_method"'), runs: "DELETE" },
    // An empty head (Rack reads the next lines as the head), and a body that starts with its close delimiter.
    { type: MP, body: '--B\r\n\r\nContent-Disposition: form-data; name="_method"\r\n\r\nDELETE\r\n--B--\r\n', runs: "DELETE" },
    { type: MP, body: '--B--\r\nContent-Disposition: form-data; name="_method"\r\n\r\nDELETE\r\n--B--\r\n', runs: "DELETE" },
  ],
  symfony: [
    { type: FORM, body: "_method=DELETE", runs: "DELETE" },
    // PHP registers these names as `_method` (main/php_variables.c: leading spaces dropped, '.' read as '_', cut at NUL).
    { type: FORM, body: "%20_method=DELETE", runs: "DELETE" },
    { type: FORM, body: "++_method=PUT", runs: "PUT" },
    { type: FORM, body: `${PAD}&_method=DELETE`, runs: "DELETE" },
    { type: FORM, body: ".method=DELETE", runs: "DELETE" },
    { type: FORM, body: "_method%00ignored=PATCH", runs: "PATCH" },
    { type: "multipart/form-data; boundary=B", body: '--B\r\nContent-Disposition: form-data; name="_method"\r\n\r\nPUT\r\n--B--\r\n', runs: "PUT" },
    { type: "multipart/form-data; boundary=B", body: '--B\r\nContent-Disposition: form-data; name=".method"\r\n\r\nDELETE\r\n--B--\r\n', runs: "DELETE" },
    // PHP (main/rfc1867.c) finds the first "boundary" (lower case first), then the first '=' after it.
    { type: "multipart/form-data; BOUNDARY=AAA; xboundary; y=B", body: PUT_PART_B, runs: "PUT" },
    { type: "multipart/form-data; boundaryjunk=B", body: PUT_PART_B, runs: "PUT" },
    // PHP reads single-quoted values, and joins a line without ':' to the one before as it is.
    { type: MP, body: mp("Content-Disposition: form-data; name='_method'"), runs: "DELETE" },
    { type: MP, body: mp('Content-Disposition: form-data; na\r\nme="_method"'), runs: "DELETE" },
    { type: MP, body: mp('Content-Disposition: form-data; name="_met\r\nhod"'), runs: "DELETE" },
    ...SHARED_HEADS.map((head) => ({ type: MP, body: mp(head), runs: "DELETE" })),
    { type: MP, body: FAKE_DELIMITER, runs: "DELETE" },
    // PHP cuts a quoted value at its quote, and reads head lines in 5 KiB pieces.
    { type: MP, body: mp('Content-Disposition: name="_method"x'), runs: "DELETE" },
    { type: MP, body: mp(`X: ${"a".repeat(5117)}Content-Disposition: name="_method"`), runs: "DELETE" },
  ],
};

/** Bodies no framework reads as another method: they reach the app and it runs POST. */
const HARMLESS: readonly { readonly type: string | undefined; readonly body: string }[] = [
  { type: FORM, body: "payment_method=card&note=_method" },
  { type: FORM, body: `${PAD}&payment_method=card` },
  { type: "application/json", body: '{"payment_method":"card","note":"_method"}' },
  { type: "multipart/form-data; boundary=B", body: '--B\r\nContent-Disposition: form-data; name="page"; filename="payment_method.html"\r\n\r\n<input type="hidden" name="_method" value="delete">\r\n--B--\r\n' },
  { type: "text/plain", body: "_method=DELETE" },
];

function post(path: string, type: string | undefined, body: string, extra = ""): Buffer {
  const bytes = Buffer.from(body, "latin1");
  return Buffer.from(`POST ${path} HTTP/1.1\r\nHost: app\r\n${type === undefined ? "" : `Content-Type: ${type}\r\n`}Content-Length: ${bytes.length}\r\n${extra}\r\n${body}`, "latin1");
}

let ca: MeshCa;
let caller: SecurityMesh["caller"];
let callerContext: SecureContext;
const frameworks: Framework[] = [];

beforeAll(async () => {
  ca = await startMeshCa();
  const policy = join(ca.dir, "policy.yaml");
  writeFileSync(policy, POLICY);
  const files = await ca.clientFiles("shop", "orders");
  caller = { cert: readFileSync(files.cert, "utf8"), key: readFileSync(files.key, "utf8"), ca: ca.bundlePem };
  callerContext = createSecureContext(caller);
  const apps = {
    rack: () => startChildApp<Ran>("rack", "ruby", () => [join(APPS_DIR, "rack_app.rb")]),
    symfony: () => startChildApp<Ran>("symfony", "php", () => ["-S", "127.0.0.1:0", join(APPS_DIR, "symfony_app.php")]),
  };
  for (const name of ["rack", "symfony"] as const) {
    const app = await apps[name]();
    const entry: { name: typeof name; records: () => Ran[]; port: number; sidecar?: TestSidecarWithApp; close(): Promise<void> } = {
      name,
      port: app.port,
      records: app.records,
      close: async () => {
        await entry.sidecar?.close();
        await app.close();
      },
    };
    frameworks.push(entry as Framework);
    entry.sidecar = await startTestSidecar(ca, { appId: `app-${name}`, namespace: "shop", app: `127.0.0.1:${app.port}`, policy });
  }
}, 90_000);

afterAll(async () => {
  for (const framework of frameworks.splice(0)) await framework.close().catch(() => undefined);
  await ca?.close();
});

const meshOf = (): SecurityMesh => ({ caller, callerContext, outbound: { addresses: { outbound: { port: 0 } } } }) as unknown as SecurityMesh;
const targetOf = (framework: Framework): MeshApp => ({ sidecar: framework.sidecar, appId: `app-${framework.name}` }) as unknown as MeshApp;

async function h1(framework: Framework, bytes: Buffer, expect = 1): Promise<Answer[]> {
  return (await h1Exchange(meshOf(), targetOf(framework), "inbound", bytes, { expect })).answers;
}

const refused = (answer: Answer | undefined) => {
  expect(answer?.status, JSON.stringify(answer)).toBe(400);
  expect(answer?.headers["x-meshward-error"]).toBe("E_AMBIGUOUS_REQUEST");
  expect(answer?.body).toMatch(/_method|multipart/);
};

describe.each(["rack", "symfony"] as const)("%s behind the sidecar", (name) => {
  let framework: Framework;
  let seen = 0;
  beforeEach(() => {
    framework = frameworks.find((f) => f.name === name)!;
    seen = framework.records().length;
  });
  const ranSince = () => framework.records().slice(seen);

  it("runs the method a _method body names where the policy allows every method (the control: nothing is read)", async () => {
    for (const { type, body, runs } of OVERRIDES[name]) {
      const [answer] = await h1(framework, post("/open/x", type, body));
      expect(answer?.status, `${type} ${JSON.stringify(body)}`).toBe(200);
      expect(answer?.body, `${type} ${JSON.stringify(body)}`).toBe(runs);
    }
  });

  it("never runs another method on /items: each such body is refused before the app has it, over HTTP/1.1 and HTTP/2", async () => {
    for (const { type, body } of OVERRIDES[name]) {
      refused((await h1(framework, post("/items/1", type, body)))[0]);
      const h2 = await h2Exchange(meshOf(), targetOf(framework), "inbound", { method: "POST", path: "/items/2", headers: type === undefined ? {} : { "content-type": type }, body });
      refused(h2.answer);
    }
    expect(ranSince().filter((r) => r.path.startsWith("/items"))).toEqual([]);
  });

  it("refuses a compressed body on /items whatever it holds; on /open, where nothing is read, it passes as before", async () => {
    const [open] = await h1(framework, post("/open/z", FORM, "_method=DELETE", "Content-Encoding: gzip\r\n"));
    expect(open?.body).toBe("DELETE");
    const [compressed] = await h1(framework, post("/items/z", FORM, "a=1", "Content-Encoding: gzip\r\n"));
    refused(compressed);
    expect(compressed?.body).toMatch(/Content-Encoding \\"gzip\\"/);
    expect(ranSince().filter((r) => r.path.startsWith("/items"))).toEqual([]);
  });

  it("refuses a field split across chunks of a chunked body, and one in a body pipelined behind another request", async () => {
    const chunked = Buffer.from(`POST /items/3 HTTP/1.1\r\nHost: app\r\nContent-Type: ${FORM}\r\nTransfer-Encoding: chunked\r\n\r\n6\r\na=1&_m\r\nd\r\nethod=DELETE&\r\n3\r\nb=2\r\n0\r\n\r\n`, "latin1");
    refused((await h1(framework, chunked))[0]);
    // The second request's body is read while the first is with the app: judged once it is decided.
    const answers = await h1(framework, Buffer.concat([post("/items/4", FORM, "a=1"), post("/items/5", FORM, "x=1&_method=DELETE")]), 2);
    expect(answers.map((a) => a.status)).toEqual([200, 400]);
    expect(answers[0]!.body).toBe("POST");
    refused(answers[1]);
    expect(ranSince()).toEqual([{ method: "POST", path: "/items/4", body: 3 }]);
  });

  it("forwards POST bodies that name no _method, whole, pipelined ones included", async () => {
    for (const { type, body } of HARMLESS) {
      const [answer] = await h1(framework, post("/items/6", type, body));
      expect(answer?.status, `${type} ${JSON.stringify(body)}`).toBe(200);
      expect(answer?.body).toBe("POST");
      const h2 = await h2Exchange(meshOf(), targetOf(framework), "inbound", { method: "POST", path: "/items/7", headers: type === undefined ? {} : { "content-type": type }, body });
      expect(h2.answer?.status).toBe(200);
    }
    const answers = await h1(framework, Buffer.concat([post("/items/8", FORM, "a=1"), post("/items/9", FORM, "payment_method=card")]), 2);
    expect(answers.map((a) => `${a.status} ${a.body}`)).toEqual(["200 POST", "200 POST"]);
    const ran = ranSince();
    expect(ran.every((r) => r.method === "POST")).toBe(true);
    expect(ran.length).toBe(HARMLESS.length * 2 + 2);
    // PHP takes a multipart body for itself (php://input is empty then): sizes of the others.
    const sized = HARMLESS.map((h, i) => [h, i] as const).filter(([h]) => !h.type?.startsWith("multipart/"));
    expect(sized.map(([, i]) => ran.filter((r) => r.path === "/items/6")[i]!.body)).toEqual(sized.map(([h]) => Buffer.byteLength(h.body, "latin1")));
  });
});

describe("_method in the query and override fields, as PHP and Rack read them", () => {
  it("runs PATCH on Symfony for names PHP registers as _method, and the sidecar refuses them whatever the policy", async () => {
    const symfony = frameworks.find((f) => f.name === "symfony")!;
    // A leading space (dropped by PHP) and a NUL followed by an escape that is not UTF-8 (PHP cuts the name at the NUL).
    for (const query of ["%20_method=PATCH", "_method%00%ff=PATCH"]) {
      // Straight to the app (no sidecar): what the name means to PHP.
      const direct = await fetch(`http://127.0.0.1:${symfony.port}/open/q?${query}`, { method: "POST", headers: { "content-type": FORM }, body: "a=1" });
      expect(await direct.text(), query).toBe("PATCH");
      for (const path of [`/items/q?${query}`, `/open/q?${query}`]) {
        const [answer] = await h1(symfony, post(path, FORM, "a=1"));
        expect(answer?.status, path).toBe(400);
        expect(answer?.headers["x-meshward-error"]).toBe("E_AMBIGUOUS_REQUEST");
      }
    }
  });

  it("refuses override fields spelt with '_' or '.', which both apps read as X-HTTP-Method-Override", async () => {
    for (const framework of frameworks) {
      const spellings = framework.name === "symfony" ? ["X_HTTP_METHOD_OVERRIDE", "X-HTTP_Method-Override", "X.HTTP.Method.Override"] : ["X_HTTP_METHOD_OVERRIDE", "X-HTTP_Method-Override"];
      for (const field of spellings) {
        const direct = await rawToApp(framework.port, `POST /open/h HTTP/1.1\r\nHost: app\r\n${field}: DELETE\r\nContent-Type: ${FORM}\r\nContent-Length: 3\r\nConnection: close\r\n\r\na=1`);
        expect(direct, `${framework.name} ${field}`).toMatch(/\r\n\r\nDELETE$/);
        const [answer] = await h1(framework, post("/items/h", FORM, "a=1", `${field}: DELETE\r\n`));
        expect(answer?.status, `${framework.name} ${field}`).toBe(400);
        expect(answer?.headers["x-meshward-error"]).toBe("E_AMBIGUOUS_REQUEST");
      }
    }
  });
});

/** Raw bytes to the app itself (fetch would not send these field names); what it answered. */
async function rawToApp(port: number, request: string): Promise<string> {
  const { connect } = await import("node:net");
  return new Promise((resolve, reject) => {
    const socket = connect({ host: "127.0.0.1", port }, () => socket.end(request));
    let text = "";
    socket.on("data", (d: Buffer) => (text += d.toString("latin1")));
    socket.on("close", () => resolve(text));
    socket.on("error", reject);
    socket.setTimeout(10_000, () => socket.destroy(new Error("no answer")));
  });
}

describe("Express 4 (express.urlencoded, express.json, method-override) behind the sidecar", () => {
  // The real app (apps/express_app.mjs, the one the differential suite runs): body-parser 1.20
  // inflates gzip and deflate (lib/read.js contentstream; `br` only from Express 5's body-parser 2,
  // Express 4 answers 415) and decodes any `utf-*` JSON charset, a BOM included (lib/types/json.js,
  // iconv-lite), then method-override's function form reads req.body._method on a POST.
  let app: Awaited<ReturnType<typeof startChildApp<AppRecord>>>;
  let sidecar: TestSidecarWithApp;
  const ran = (): Ran[] => app.records().map((r) => ({ method: r.method, path: r.target ?? r.path, body: r.bodyBytes }));
  beforeAll(async () => {
    app = await startChildApp<AppRecord>("express", process.execPath, () => [join(APPS_DIR, "express_app.mjs")]);
    sidecar = await startTestSidecar(ca, { appId: "app-express", namespace: "shop", app: `127.0.0.1:${app.port}`, policy: join(ca.dir, "policy.yaml") });
  }, 60_000);
  afterAll(async () => {
    await sidecar?.close();
    await app?.close();
  });
  /** The method the Express app ran (its answers are JSON: app, method, path, handler). */
  const ranMethod = (answer: Answer | undefined): string | undefined => (answer?.headers["x-app"] === "express" ? (JSON.parse(answer.body) as { method: string }).method : undefined);

  const target = (): MeshApp => ({ sidecar, appId: "app-express" }) as unknown as MeshApp;
  const send = (path: string, type: string, body: Buffer, coding?: string) =>
    Buffer.concat([Buffer.from(`POST ${path} HTTP/1.1\r\nHost: app\r\nContent-Type: ${type}\r\n${coding === undefined ? "" : `Content-Encoding: ${coding}\r\n`}Content-Length: ${body.length}\r\n\r\n`, "latin1"), body]);
  const utf16 = (text: string) => Buffer.from(text, "utf16le");
  /**
   * Each runs DELETE in the app (`runs`): compressed forms and JSON, JSON in UTF-16 (named, or told
   * by a BOM). A br body Express 4 refuses itself (415, POST), Express 5 runs DELETE: the sidecar
   * refuses it on /items all the same.
   */
  const BODIES: readonly { readonly id: string; readonly type: string; readonly body: Buffer; readonly coding?: string; readonly status?: number; readonly runs?: string }[] = [
    { id: "gzip form", type: FORM, body: gzipSync("_method=DELETE"), coding: "gzip" },
    { id: "deflate form", type: FORM, body: deflateSync("_method=DELETE"), coding: "deflate" },
    { id: "br JSON", type: "application/json", body: brotliCompressSync('{"_method":"DELETE"}'), coding: "br", status: 415, runs: "POST" },
    { id: "gzip JSON", type: "application/json", body: gzipSync('{"_method":"DELETE"}'), coding: "gzip" },
    { id: "UTF-16LE JSON", type: "application/json; charset=utf-16le", body: utf16('{"_method":"DELETE"}') },
    { id: "UTF-16 JSON, BOM", type: "application/json; charset=utf-16", body: Buffer.concat([Buffer.from([0xfe, 0xff]), utf16('{"_method":"DELETE"}').swap16()]) },
    { id: "UTF-16 JSON after a utf-8 charset", type: "application/json; charset=utf-8; charset=utf-16le", body: utf16('{"_method":"DELETE"}') },
  ];

  it("runs DELETE for each such body where the policy allows every method (the control: nothing is read)", async () => {
    const before = ran().length;
    for (const b of BODIES) {
      const [answer] = (await h1Exchange(meshOf(), target(), "inbound", send("/open/e", b.type, b.body, b.coding))).answers;
      expect(answer?.status, b.id).toBe(b.status ?? 200);
      expect(ranMethod(answer), b.id).toBe(b.runs ?? "DELETE");
    }
    expect(ran().slice(before).map((r) => r.method)).toEqual(BODIES.map((b) => b.runs ?? "DELETE"));
  });

  it("never runs DELETE on /items, where the policy allows POST only: each body is refused, over HTTP/1.1 and HTTP/2", async () => {
    const before = ran().length;
    for (const b of BODIES) {
      const [answer] = (await h1Exchange(meshOf(), target(), "inbound", send("/items/e", b.type, b.body, b.coding))).answers;
      expect(answer?.status, b.id).toBe(400);
      expect(answer?.headers["x-meshward-error"], b.id).toBe("E_AMBIGUOUS_REQUEST");
      const headers = { "content-type": b.type, ...(b.coding === undefined ? {} : { "content-encoding": b.coding }) };
      const h2 = await h2Exchange(meshOf(), target(), "inbound", { method: "POST", path: "/items/f", headers, body: b.body });
      expect(h2.answer?.status, `h2 ${b.id}`).toBe(400);
      expect(h2.answer?.headers["x-meshward-error"], `h2 ${b.id}`).toBe("E_AMBIGUOUS_REQUEST");
    }
    expect(ran().slice(before)).toEqual([]);
  });

  it("forwards uncompressed UTF-8 bodies without _method on /items, and compressed ones of types no framework reads _method from", async () => {
    const before = ran().length;
    for (const [type, body, coding] of [
      [FORM, Buffer.from("a=1"), undefined],
      ["application/json; charset=UTF-8", Buffer.from('{"a":"é"}'), "identity"],
      ["application/octet-stream", gzipSync("_method=DELETE"), "gzip"],
      ["text/plain", gzipSync("x"), "gzip"],
    ] as const) {
      const [answer] = (await h1Exchange(meshOf(), target(), "inbound", send("/items/g", type, body, coding))).answers;
      expect(answer?.status, type).toBe(200);
      expect(ranMethod(answer), type).toBe("POST");
    }
    expect(ran().slice(before).map((r) => `${r.method} ${r.path} ${r.body}`)).toEqual(["POST /items/g 3", "POST /items/g 10", "POST /items/g 34", "POST /items/g 21"]);
  });
});
