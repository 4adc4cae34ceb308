import { spawn } from "node:child_process";
import { request as httpsRequest, type RequestOptions } from "node:https";
import { waitFor } from "./wait.ts";

/**
 * Connects with `openssl s_client -tls1_2` (TLS 1.3 has no renegotiation), waits for the
 * handshake, then asks for a client-initiated renegotiation (s_client's "R" command) and
 * writes `after` (e.g. an HTTP request). Returns what s_client printed once it exited, or after
 * `settleMs` if the server let the connection live. The child is always stopped.
 */
export async function renegotiateWithSClient(address: string, args: readonly string[], after = "", settleMs = 1500): Promise<{ output: string; exitCode: number | null }> {
  // stdbuf: s_client writes its stdout through stdio, block-buffered into a pipe.
  const child = spawn("stdbuf", ["-oL", "openssl", "s_client", "-tls1_2", "-connect", address, ...args], { stdio: ["pipe", "pipe", "pipe"] });
  let output = "";
  let exitCode: number | null = null;
  let exited = false;
  child.stdout.on("data", (d: Buffer) => (output += d.toString("latin1")));
  child.stderr.on("data", (d: Buffer) => (output += d.toString("latin1")));
  child.on("exit", (code) => {
    exited = true;
    exitCode = code;
  });
  child.stdin.on("error", () => undefined);
  try {
    await waitFor("the TLS 1.2 handshake of s_client", () => exited || /Verify return code: /.test(output), 10_000, 20);
    if (!exited) child.stdin.write("R\n");
    await waitFor("s_client to start renegotiating", () => exited || output.includes("RENEGOTIATING"), 5_000, 20);
    if (!exited && after !== "") child.stdin.write(after);
    const until = Date.now() + settleMs;
    await waitFor("s_client to end", () => exited || Date.now() > until, settleMs + 5_000, 20);
    return { output, exitCode };
  } finally {
    if (!exited) child.kill("SIGKILL");
  }
}

export interface RenegotiatingServer {
  readonly port: number;
  /** Everything s_server printed so far (it echoes what the client sent). */
  output(): string;
  /**
   * Once `received` shows in s_server's output (the client is connected and has spoken), asks
   * for a renegotiation with a client-certificate request (s_server's "R" command), then, once
   * s_server printed the renegotiation's outcome, writes `reply` to the client. Returns whether
   * s_server reported that the client refused ("no renegotiation").
   */
  renegotiateThenReply(received: string, reply: string): Promise<{ refusedByClient: boolean }>;
  /** Kills s_server if it still runs; waits for it to exit. */
  stop(): Promise<void>;
}

/**
 * A TLS 1.2 `openssl s_server` (TLS 1.3 has no renegotiation) on 127.0.0.1, port 0 (read back
 * from its "ACCEPT 127.0.0.1:<port>" line), serving one connection, that asks the connected
 * client for a renegotiation when told to: a backend or API server initiating one mid-connection.
 * The child is killed by `stop()`; if starting fails, it is killed before this rejects.
 */
export async function opensslServerRenegotiating(certFile: string, keyFile: string, args: readonly string[] = []): Promise<RenegotiatingServer> {
  // stdbuf: s_server writes its stdout through stdio, block-buffered into a pipe.
  const child = spawn("stdbuf", ["-oL", "openssl", "s_server", "-tls1_2", "-accept", "127.0.0.1:0", "-naccept", "1", "-state", "-cert", certFile, "-key", keyFile, ...args], {
    stdio: ["pipe", "pipe", "pipe"],
  });
  let output = "";
  let exited = false;
  const exit = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  child.stdout.on("data", (d: Buffer) => (output += d.toString("latin1")));
  child.stderr.on("data", (d: Buffer) => (output += d.toString("latin1")));
  child.once("exit", () => (exited = true));
  child.once("error", () => (exited = true));
  child.stdin.on("error", () => undefined);
  const stop = async () => {
    if (!exited) child.kill("SIGKILL");
    await exit;
  };
  try {
    await waitFor("s_server to listen", () => exited || /ACCEPT 127\.0\.0\.1:\d+/.test(output), 10_000, 20);
    const match = /ACCEPT 127\.0\.0\.1:(\d+)/.exec(output);
    if (match === null) throw new Error(`openssl s_server did not start: ${output}`);
    return {
      port: Number(match[1]),
      output: () => output,
      async renegotiateThenReply(received, reply) {
        await waitFor(`s_server to receive ${JSON.stringify(received)}`, () => exited || output.includes(received), 10_000, 20);
        const from = output.length;
        if (!exited) child.stdin.write("R\n");
        // With -state, s_server logs each handshake step: a renegotiation the client took part in
        // ends with "read finished"; a refusal shows as "no renegotiation" (the client's warning
        // alert, which s_server answers with a fatal one and closes). The reply is written only
        // after the verdict, so it cannot slip through before the refusal is read.
        const outcome = () => output.slice(from);
        await waitFor("the renegotiation's outcome", () => exited || /SSLv3\/TLS read finished|no renegotiation|CONNECTION CLOSED/.test(outcome()), 10_000, 20);
        // The alert line comes on stderr, "CONNECTION CLOSED" on stdout: two pipes, either may be
        // read first. A connection that ended without a completed renegotiation is waited out
        // (-naccept 1: s_server exits with it) before the verdict is read from the whole output.
        if (!outcome().includes("read finished") && !outcome().includes("no renegotiation")) {
          await waitFor("s_server to exit after the connection ended", () => exited || outcome().includes("no renegotiation"), 5_000, 20).catch(() => undefined);
        }
        const refusedByClient = outcome().includes("no renegotiation");
        if (!exited && !refusedByClient && !outcome().includes("CONNECTION CLOSED")) child.stdin.write(reply);
        return { refusedByClient };
      },
      stop,
    };
  } catch (error) {
    await stop();
    throw error;
  }
}

/**
 * A plain node:https GET (Node's defaults, so renegotiation is allowed) that resolves with the
 * body as text: the control client of the renegotiation tests.
 */
export function httpsGetText(options: RequestOptions): Promise<string> {
  return new Promise<string>((resolve, reject) => {
    const req = httpsRequest({ ...options, method: "GET", agent: false }, (res) => {
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => (text += chunk));
      res.on("end", () => resolve(text));
      res.on("error", reject);
    });
    req.on("error", reject);
    req.end();
  });
}
