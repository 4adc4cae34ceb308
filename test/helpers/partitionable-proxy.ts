import { connect, createServer, type Server, type Socket } from "node:net";

/**
 * A TCP proxy to PostgreSQL that can stop passing bytes (both ways, new connections too) and pass
 * them again. Bytes read during the partition are held and passed on when it heals, and so is a
 * connection closed on one side. (Not
 * pause()/pipe(): pipe() resumes a paused source when its destination drains, which let bytes
 * through a "partition" on a busy machine.)
 */
export async function partitionableProxy(port: number): Promise<{ port: number; partition(): void; heal(): void; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  const flushes = new Set<() => void>();
  const closes = new Set<() => void>();
  let partitioned = false;
  /** Forwards `from` to `to`, holding what arrives while partitioned. */
  const forward = (from: Socket, to: Socket) => {
    const held: Buffer[] = [];
    const flush = () => {
      for (const chunk of held.splice(0)) to.write(chunk);
    };
    flushes.add(flush);
    from.on("data", (chunk: Buffer) => {
      if (partitioned) held.push(chunk);
      else to.write(chunk);
    });
    from.on("close", () => {
      flushes.delete(flush);
      // A close does not cross a partition either (no FIN gets through): passed on when it heals.
      if (partitioned) closes.add(() => to.destroy());
      else to.destroy();
    });
  };
  const track = (socket: Socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    socket.on("error", () => undefined);
  };
  const server: Server = createServer((down) => {
    const up = connect(port, "127.0.0.1");
    track(down);
    track(up);
    forward(down, up);
    forward(up, down);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: (server.address() as { port: number }).port,
    partition() {
      partitioned = true;
    },
    heal() {
      partitioned = false;
      for (const flush of flushes) flush();
      for (const close of closes) close();
      closes.clear();
    },
    async close() {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
