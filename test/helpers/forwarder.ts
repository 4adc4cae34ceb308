import { createServer, connect, type Socket } from "node:net";

/**
 * A loopback TCP forwarder whose target can change between connections (`route()` is read for
 * each new one): a workload given its port as the CA address reaches whichever CA or replica the
 * test routes it to. `close()` destroys every relayed connection.
 */
export async function startSwitchableForwarder(): Promise<{ port: number; route: () => number; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  const forwarder = {
    port: 0,
    route: (): number => 0,
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
  const server = createServer((client) => {
    const upstream = connect(forwarder.route(), "127.0.0.1");
    for (const socket of [client, upstream]) {
      sockets.add(socket);
      socket.on("close", () => sockets.delete(socket));
      socket.on("error", () => {
        client.destroy();
        upstream.destroy();
      });
    }
    client.pipe(upstream).pipe(client);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  forwarder.port = (server.address() as { port: number }).port;
  return forwarder;
}
