import { spawn } from "node:child_process";
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
