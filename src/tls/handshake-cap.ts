import { Socket } from "node:net";
import { Duplex } from "node:stream";
import { TLSSocket, type Server as TlsServer } from "node:tls";
import { MeshwardError } from "../errors.ts";

/**
 * Bytes a client may send before its TLS handshake completes (ClientHello, and its Certificate,
 * CertificateVerify and Finished flight). Node offers neither SSL_CTX_set_max_cert_list nor a verify
 * depth (nodejs/node#39208), and Node's verify callback accepts every error, so OpenSSL checks the
 * signature of every link of whatever chain a client presents, on the event loop, before meshward
 * sees the certificate: a made-up chain of RSA-3072 links with ~3060-bit public exponents costs
 * ~15–23 ms per link, and OpenSSL's own 100 KiB certificate-list cap lets ~70 links through (about
 * 1 s per handshake, replayable). Under this cap OpenSSL never holds more than 16 KiB of a client's
 * handshake, so a refused chain is never verified at all and an accepted one has at most ~11 such
 * links. Real flights measured with bench/handshake/flights.ts (docs/threat-model.md, "Resource
 * exhaustion"; TLS 1.3, TLS 1.2 within 150 bytes): no certificate ≈ 0.5 KB, a P-256 SVID chain ≈ 1.5 KB,
 * an RSA-4096 leaf + 2 intermediates ≈ 5 KB; 16 KiB leaves room for a chain of ten RSA-4096 certificates.
 */
export const DEFAULT_MAX_HANDSHAKE_BYTES = 16 * 1024;

/** The refusal reason (metric label, log field) of a connection over the cap. */
export const HANDSHAKE_TOO_LARGE = "handshake_too_large" as const;

export interface HandshakeCapOptions {
  /** Bytes a connection may send before its handshake completes; a connection over it is reset unverified. */
  readonly maxBytes: number;
  /** Called once for each connection refused, with its raw socket (the address is still readable) and the cap. */
  readonly onRefused: (raw: Socket, maxBytes: number) => void;
}

/**
 * The counting stream between a connection's raw socket and its TLSSocket. Node's TLSWrap reads a
 * net.Socket's handle in C++, where no JS sees the bytes, so a capped connection's TLSSocket wraps
 * this Duplex instead (Node runs it through its JSStreamSocket) and stays on it for the connection's
 * life: the TLS state lives in the TLSWrap and cannot move to the raw handle afterwards.
 *
 * Before the handshake completes, at most `maxBytes` reach the TLS layer. A chunk that would pass
 * the cap is cut there: the part that fits goes to TLS, the rest (one socket read at most, the raw
 * socket paused meanwhile) waits. If the handshake completes on what TLS was given (a client that
 * writes a large request right behind its Finished), the rest follows; if not, TLS has consumed all
 * it was given without completing, the connection is reset and `onRefused` is told. OpenSSL
 * processes a handshake message only once it has all of it, so a Certificate message that did not
 * fit is never parsed or verified.
 */
export class HandshakeCapStream extends Duplex {
  readonly raw: Socket;
  readonly remoteAddress: string | undefined;
  readonly remotePort: number | undefined;
  readonly remoteFamily: string | undefined;
  readonly localAddress: string | undefined;
  readonly localPort: number | undefined;
  #received = 0;
  #secured = false;
  #refused = false;
  /** The part of a chunk over the cap, waiting for the handshake to complete. */
  #held: Buffer | undefined;
  #deciding = false;

  constructor(
    raw: Socket,
    private readonly maxBytes: number,
    private readonly onRefused: (raw: Socket, maxBytes: number) => void,
  ) {
    super({ allowHalfOpen: raw.allowHalfOpen });
    this.raw = raw;
    // Read now: a socket reset later no longer knows its peer.
    this.remoteAddress = raw.remoteAddress;
    this.remotePort = raw.remotePort;
    this.remoteFamily = raw.remoteFamily;
    this.localAddress = raw.localAddress;
    this.localPort = raw.localPort;
    // Half-close is the TLSSocket's to decide, as when it reads the socket's handle itself: it
    // takes allowHalfOpen from this stream when it wraps it (the raw socket's, as natively), and
    // neither this stream nor the raw socket may end its writing side on its own at EOF
    // (`wrapped()` sets this stream's once the TLSSocket has read it).
    raw.allowHalfOpen = true;
    raw.pause();
    raw.on("data", (chunk: Buffer) => this.#onData(chunk));
    raw.on("end", () => this.push(null));
    raw.on("error", (error) => this.destroy(error));
    raw.on("close", () => this.destroy());
  }

  /** Called once the TLSSocket wraps this stream: from now on only it ends the writing side. */
  wrapped(): void {
    this.allowHalfOpen = true;
  }

  /** Whether the cap reset this connection. */
  get refused(): boolean {
    return this.#refused;
  }

  /** Bytes counted so far (frozen once the handshake completed). */
  get received(): number {
    return this.#received;
  }

  /** The handshake completed: bytes are no longer counted, and any held part goes to TLS. */
  secured(): void {
    if (this.#secured) return;
    this.#secured = true;
    // Not from here: this runs inside TLS's read of the bytes that completed the handshake, and a
    // push now would hand TLS the next bytes before it is done with those (out of order).
    if (this.#deciding) process.nextTick(() => this.#release());
  }

  #onData(chunk: Buffer): void {
    if (this.#secured) {
      if (!this.push(chunk)) this.raw.pause();
      return;
    }
    if (this.#refused) return;
    if (this.#held !== undefined) {
      // raw is paused: a chunk already on its way waits with the rest.
      this.#held = Buffer.concat([this.#held, chunk]);
      return;
    }
    const room = this.maxBytes - this.#received;
    if (chunk.length <= room) {
      this.#received += chunk.length;
      if (!this.push(chunk)) this.raw.pause();
      return;
    }
    this.#received = this.maxBytes;
    this.raw.pause();
    this.#held = chunk.subarray(room);
    this.#deciding = true;
    // Pushed in flowing mode, the part that fits reaches TLS synchronously, and a handshake it
    // completes marks this stream secured (secureConnection) before push returns.
    if (room > 0) this.push(chunk.subarray(0, room));
    this.#decide();
  }

  /** Over the cap: refuse once TLS has consumed what it was given without completing the handshake. */
  #decide(): void {
    if (!this.#deciding || this.#secured || this.destroyed) return;
    if (this.readableLength > 0) return; // TLS has not read it all yet: _read comes back here
    setImmediate(() => {
      if (!this.#deciding || this.#secured || this.destroyed || this.readableLength > 0) return;
      this.#refuse();
    });
  }

  #refuse(): void {
    this.#deciding = false;
    this.#refused = true;
    this.#held = undefined;
    this.onRefused(this.raw, this.maxBytes);
    this.raw.on("error", () => undefined);
    if (!this.raw.destroyed) this.raw.resetAndDestroy();
    this.destroy();
  }

  #release(): void {
    if (this.destroyed) return;
    this.#deciding = false;
    const held = this.#held;
    this.#held = undefined;
    if (held !== undefined && !this.push(held)) return; // _read resumes raw
    this.raw.resume();
  }

  override _read(): void {
    if (this.#deciding) {
      this.#decide();
      return;
    }
    if (this.#held !== undefined || this.#refused) return;
    this.raw.resume();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.raw.write(chunk, callback);
  }

  override _writev(chunks: Array<{ chunk: Buffer }>, callback: (error?: Error | null) => void): void {
    this.raw.cork();
    for (let i = 0; i < chunks.length - 1; i++) this.raw.write(chunks[i]!.chunk);
    this.raw.write(chunks[chunks.length - 1]!.chunk, callback);
    this.raw.uncork();
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.raw.end(callback);
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.#held = undefined;
    this.#deciding = false;
    if (!this.raw.destroyed) this.raw.destroy();
    callback(error);
  }
}

const adopted = new WeakMap<TLSSocket, HandshakeCapStream>();

/** The capped stream under a TLSSocket accepted through capHandshakeBytes (or undefined). */
export function capOf(socket: TLSSocket): HandshakeCapStream | undefined {
  return adopted.get(socket);
}

/**
 * The TLSSocket of a capped connection reports the raw socket's addresses from the moment it is
 * made (a TLSSocket over a JS stream has none of its own: before, after or without a handshake), so
 * per-address caps, XFCC, status pages and logs, failed handshakes included, stay right.
 */
function adopt(socket: TLSSocket, cap: HandshakeCapStream): void {
  if (adopted.has(socket)) return;
  adopted.set(socket, cap);
  const fixed = (value: unknown) => ({ configurable: true, enumerable: false, get: () => value });
  Object.defineProperties(socket, {
    remoteAddress: fixed(cap.remoteAddress),
    remotePort: fixed(cap.remotePort),
    remoteFamily: fixed(cap.remoteFamily),
    localAddress: fixed(cap.localAddress),
    localPort: fixed(cap.localPort),
  });
  (socket as unknown as { address: () => object }).address = () => cap.raw.address();
  // setNoDelay/setKeepAlive on the TLSSocket would reach the JS stream (a no-op): pass them on.
  (socket as unknown as { setNoDelay: (on?: boolean) => TLSSocket }).setNoDelay = (on?: boolean) => {
    cap.raw.setNoDelay(on);
    return socket;
  };
  (socket as unknown as { setKeepAlive: (on?: boolean, delay?: number) => TLSSocket }).setKeepAlive = (on?: boolean, delay?: number) => {
    cap.raw.setKeepAlive(on, delay);
    return socket;
  };
  socket.once("close", () => cap.destroy());
}

let initHooked = false;

/**
 * Finds each TLSSocket made over a HandshakeCapStream as it is made: node:tls's TLSSocket
 * constructor calls `this._init(socket, wrap)` with the stream it was given (Node 20 internals:
 * test/tls/handshake-cap.test.ts fails if a release moves it). Other sockets pass untouched.
 */
function hookTlsSocketInit(): void {
  if (initHooked) return;
  const proto = TLSSocket.prototype as unknown as { _init?: (this: TLSSocket, socket: unknown, wrap: unknown) => unknown };
  const init = proto._init;
  if (typeof init !== "function") throw unsupported("node:tls's TLSSocket has no _init");
  initHooked = true;
  proto._init = function (this: TLSSocket, socket: unknown, wrap: unknown) {
    if (socket instanceof HandshakeCapStream) adopt(this, socket);
    return init.call(this, socket, wrap);
  };
}

interface Installed {
  options: HandshakeCapOptions;
}

const installed = new WeakMap<object, Installed>();

/**
 * Caps the bytes each connection of `server` (a tls.Server, https.Server or Http2SecureServer: any
 * server whose connections reach node:tls's own 'connection' listener, including sockets handed
 * over with `server.emit("connection", socket)`) may send before its TLS handshake completes.
 * Called again on the same server, it takes the new options.
 */
/** The internals the cap hooks are not there: this Node release cannot enforce maxHandshakeBytes. */
function unsupported(what: string): MeshwardError {
  return new MeshwardError("E_RUNTIME_UNSUPPORTED", `maxHandshakeBytes cannot be enforced on Node ${process.version}: ${what} (the cap hooks node:tls internals of Node 20–26)`);
}

export function capHandshakeBytes(server: TlsServer, options: HandshakeCapOptions): void {
  const known = installed.get(server);
  if (known !== undefined) {
    known.options = options;
    return;
  }
  const original = server.listeners("connection").find((listener) => listener.name === "tlsConnectionListener") as ((this: TlsServer, socket: unknown) => void) | undefined;
  if (original === undefined) throw unsupported("the server has no node:tls connection listener (tlsConnectionListener)");
  hookTlsSocketInit();
  const state: Installed = { options };
  installed.set(server, state);
  server.removeListener("connection", original);
  server.prependListener("connection", function (this: TlsServer, socket: unknown) {
    if (!(socket instanceof Socket) || socket.destroyed) {
      original.call(this, socket);
      return;
    }
    const cap = new HandshakeCapStream(socket, state.options.maxBytes, (raw, maxBytes) => state.options.onRefused(raw, maxBytes));
    original.call(this, cap);
    cap.wrapped();
  });
  // The handshake is over: bytes are no longer counted.
  server.prependListener("secureConnection", (socket: TLSSocket) => capOf(socket)?.secured());
}

/**
 * Whether this TLSSocket's connection was reset by the cap: Node then reports its close as a failed
 * handshake (tlsClientError, ECONNRESET), which the refusal has already counted.
 */
export function refusedByHandshakeCap(socket: TLSSocket): boolean {
  return capOf(socket)?.refused === true;
}

/** The raw socket under a TLSSocket accepted through capHandshakeBytes (or undefined). */
export function rawSocketOf(socket: TLSSocket): Socket | undefined {
  return capOf(socket)?.raw;
}
