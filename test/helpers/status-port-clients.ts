import { get } from "node:http";
import { connect, type Socket } from "node:net";

/** A connection from `localAddress` that sends half a request head and waits (what an attacker holds); kept in `opened` for the test to destroy. */
export function holdHalfHead(port: number, localAddress: string, opened: Socket[]): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: "127.0.0.1", port, localAddress }, () => {
      socket.write("GET /metrics HTTP/1.1\r\nHost: localhost\r\nX-Pad: ");
      resolve(socket);
    });
    opened.push(socket);
    socket.on("data", () => undefined);
    socket.once("error", reject);
  });
}

/** GET `path` from `localAddress` on a new connection: the status code, or the error's code when the connection was reset or refused. */
export function probe(port: number, localAddress: string, path = "/healthz"): Promise<number | string> {
  return new Promise((resolve) => {
    const req = get({ host: "127.0.0.1", port, path, localAddress, agent: false, headers: { connection: "close" } }, (res) => {
      res.resume();
      res.on("end", () => resolve(res.statusCode ?? 0));
    });
    req.on("error", (error: NodeJS.ErrnoException) => resolve(error.code ?? error.message));
  });
}
