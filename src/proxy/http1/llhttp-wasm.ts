import { createRequire } from "node:module";
import { EMPTY, afterHead } from "./message-parser.ts";
import type { MessageEvents, MessageHead, MessageParser, ParseFailure } from "./message-parser.ts";

/**
 * llhttp compiled to WebAssembly, the build undici ships (`undici/lib/llhttp/llhttp-wasm.js`,
 * MIT, pinned to an exact undici release in package.json), driven by an adapter of our own.
 * It gives the events llhttp-node.ts gives for the same bytes: strict mode (no lenient flag is
 * ever set), Node's header-size count, Node's chunk-extension bound, the answer to HEAD without
 * a body, a stop after an upgrade head, and large bodies of known length handed on as slices.
 *
 * How it is driven (read from undici's lib/dispatcher/client-h1.js, not copied): one module
 * instance per process; each parser is an `llhttp_alloc`ed struct in its memory. A chunk is
 * copied into a buffer in the instance's memory and `llhttp_execute` runs over it; the data
 * callbacks (wasm_on_url, wasm_on_header_field, …) receive pointers into that buffer, which map
 * back to offsets in the JavaScript chunk, so no byte is read back out of the instance.
 */

/** The part of the WebAssembly global used here (this project's TypeScript lib has no DOM types). */
interface WebAssemblyApi {
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object, imports: object) => { readonly exports: object };
}

interface Llhttp {
  readonly memory: { readonly buffer: ArrayBuffer };
  _initialize?(): void;
  llhttp_alloc(type: number): number;
  llhttp_free(parser: number): void;
  malloc(size: number): number;
  free(pointer: number): void;
  llhttp_execute(parser: number, data: number, length: number): number;
  llhttp_finish(parser: number): number;
  llhttp_resume(parser: number): void;
  llhttp_resume_after_upgrade(parser: number): void;
  llhttp_reset(parser: number): void;
  llhttp_get_error_pos(parser: number): number;
  llhttp_get_error_reason(parser: number): number;
  llhttp_errno_name(errno: number): number;
  llhttp_method_name(method: number): number;
  llhttp_get_method(parser: number): number;
  llhttp_get_http_major(parser: number): number;
  llhttp_get_http_minor(parser: number): number;
}

// llhttp's numbers (llhttp.h; undici/lib/llhttp/constants.js).
const TYPE_REQUEST = 1;
const TYPE_RESPONSE = 2;
const OK = 0;
const PAUSED = 21;
const PAUSED_UPGRADE = 22;
const USER = 24;

/** Node's limit on the chunk extensions of one chunk (node_http_parser.cc kMaxChunkExtensionsSize). */
const MAX_CHUNK_EXTENSIONS = 16 * 1024;
/**
 * Chunks are parsed in slices of at most this many bytes, so the instance's memory (which never
 * shrinks) stays bounded whatever a peer sends in one read.
 */
const SLICE = 64 * 1024;

/** The parser running now, and where its input sits in the instance's memory. */
interface Running {
  readonly parser: WasmParser;
  readonly base: number;
  readonly chunk: Buffer;
  /** A latin1 decoding of the input from textStart (a pointer) to textEnd. */
  text: string;
  textStart: number;
  textEnd: number;
}

/** How much input one latin1 decode covers (the fields of a few typical heads). */
const TEXT_WINDOW = 2048;

let llhttp: Llhttp | undefined;
let running: Running | undefined;
let inputPointer = 0;
let inputSize = 0;
let inputView: Uint8Array | undefined;
const methodNames = new Map<number, string>();

/** The instance's imports: each callback goes to the parser running now. */
const imports = {
  env: {
    wasm_on_message_begin: (p: number) => call(p)?.onMessageBegin() ?? USER,
    wasm_on_url: (p: number, at: number, length: number) => call(p)?.onUrl(at, length) ?? USER,
    wasm_on_status: (p: number, at: number, length: number) => call(p)?.onStatus(at, length) ?? USER,
    wasm_on_header_field: (p: number, at: number, length: number) => call(p)?.onHeaderField(at, length) ?? USER,
    wasm_on_header_value: (p: number, at: number, length: number) => call(p)?.onHeaderValue(at, length) ?? USER,
    wasm_on_headers_complete: (p: number, status: number, upgrade: number, keepAlive: number) => call(p)?.onHeadersComplete(status, upgrade === 1, keepAlive === 1) ?? USER,
    wasm_on_body: (p: number, at: number, length: number) => call(p)?.onBody(at, length) ?? USER,
    wasm_on_message_complete: (p: number) => call(p)?.onMessageComplete() ?? USER,
  },
};

/** The parser llhttp calls back for; undefined (llhttp stops) once it was closed from a callback. */
function call(pointer: number): WasmParser | undefined {
  if (running === undefined || running.parser.pointer !== pointer) throw new Error("llhttp called back outside of its parser's execute");
  return running.parser.closed ? undefined : running.parser;
}

/**
 * Compiles and instantiates the pinned build (once per process; ~25 ms); throws (a plain Error)
 * when it cannot be loaded. `source` is the module's bytes, for tests.
 */
export function loadWasmParser(source?: () => Uint8Array): typeof createWasmParser {
  if (llhttp === undefined) {
    const bytes = source?.() ?? (createRequire(import.meta.url)("undici/lib/llhttp/llhttp-wasm.js") as Uint8Array);
    const api = (globalThis as unknown as { WebAssembly?: WebAssemblyApi }).WebAssembly;
    if (api === undefined) throw new Error("WebAssembly is not available in this Node.js (--jitless?)");
    const { Module, Instance } = api;
    const instance = new Instance(new Module(bytes), imports);
    const exports = instance.exports as unknown as Llhttp;
    for (const name of ["llhttp_alloc", "llhttp_execute", "llhttp_finish", "llhttp_resume", "llhttp_resume_after_upgrade", "llhttp_reset", "llhttp_get_error_pos", "llhttp_get_http_major", "llhttp_get_http_minor", "malloc"] as const) {
      if (typeof exports[name] !== "function") throw new Error(`the llhttp WebAssembly module has no ${name}`);
    }
    exports._initialize?.();
    llhttp = exports;
  }
  return createWasmParser;
}

function cString(pointer: number): string {
  if (pointer === 0) return "";
  const memory = new Uint8Array(llhttp!.memory.buffer);
  const end = memory.indexOf(0, pointer);
  return Buffer.from(memory.buffer, pointer, end - pointer).toString("latin1");
}

function methodName(method: number): string {
  let name = methodNames.get(method);
  if (name === undefined) {
    name = cString(llhttp!.llhttp_method_name(method));
    methodNames.set(method, name);
  }
  return name;
}

/** Copies `chunk` into the instance's memory; returns where it starts. */
function place(chunk: Buffer, nested: boolean): number {
  const wasm = llhttp!;
  let pointer = inputPointer;
  if (nested) {
    // A callback of one parser ran another's execute: the shared buffer is in use.
    pointer = wasm.malloc(Math.max(1, chunk.length));
  } else if (chunk.length > inputSize || inputPointer === 0) {
    if (inputPointer !== 0) wasm.free(inputPointer);
    inputSize = Math.max(1, Math.ceil(chunk.length / 4096)) * 4096;
    inputPointer = pointer = wasm.malloc(inputSize);
  }
  if (pointer === 0) throw new Error("the llhttp WebAssembly module is out of memory");
  if (inputView === undefined || inputView.buffer !== wasm.memory.buffer) inputView = new Uint8Array(wasm.memory.buffer);
  inputView.set(chunk, pointer);
  return pointer;
}

/** A strict (non-lenient) parser for requests or responses, one per connection. */
export function createWasmParser(kind: "request" | "response", maxHeaderBytes: number, events: MessageEvents): MessageParser {
  loadWasmParser();
  return new WasmParser(kind, maxHeaderBytes, events);
}

const NONE = 0;
const FIELD = 1;
const VALUE = 2;

class WasmParser implements MessageParser {
  readonly pointer: number;
  readonly #request: boolean;
  readonly #maxHeaderBytes: number;
  readonly #events: MessageEvents;
  /** Bytes of url, status, names and values since the head (or the last chunk) began, as Node counts. */
  #headerBytes = 0;
  #url = "";
  #statusMessage = "";
  #fields: string[] = [];
  #field = "";
  #value = "";
  /** What the last header callback carried: a name or a value may come in several pieces. */
  #last = NONE;
  #inBody = false;
  /** Bytes of a body not handed on as body since the last data callback: chunk framing and extensions. */
  #quiet = 0;
  #lastEnd = 0;
  #rawLeft = 0;
  /** onHeadersComplete paused llhttp: for a body handed on raw, or to stop after the head (#stop). */
  #paused = false;
  #stop = false;
  #failure: ParseFailure | undefined;
  #depth = 0;
  #closed = false;
  /** An upgrade head was parsed: what follows is not HTTP/1, and nothing more is consumed. */
  #upgraded = false;

  get closed(): boolean {
    return this.#closed;
  }

  constructor(kind: "request" | "response", maxHeaderBytes: number, events: MessageEvents) {
    this.#request = kind === "request";
    this.#maxHeaderBytes = maxHeaderBytes;
    this.#events = events;
    this.pointer = llhttp!.llhttp_alloc(this.#request ? TYPE_REQUEST : TYPE_RESPONSE);
    if (this.pointer === 0) throw new Error("the llhttp WebAssembly module is out of memory");
  }

  execute(chunk: Buffer): number | ParseFailure {
    if (this.#closed) return { code: "HPE_CLOSED_CONNECTION", reason: "the parser is closed" };
    // Node's binding would parse on (and hide the error); the relay stops at the upgrade head.
    if (this.#upgraded) return 0;
    const wasm = llhttp!;
    let offset = 0;
    // An empty chunk runs llhttp too: after a stop it completes a bodiless message.
    do {
      if (this.#rawLeft > 0) {
        if (offset === chunk.length) break;
        const take = Math.min(this.#rawLeft, chunk.length - offset);
        this.#events.onBody(offset === 0 && take === chunk.length ? chunk : chunk.subarray(offset, offset + take));
        this.#rawLeft -= take;
        offset += take;
        if (this.#rawLeft === 0) {
          wasm.llhttp_reset(this.pointer);
          this.#inBody = false;
          this.#events.onComplete(EMPTY);
        }
        continue;
      }
      const end = Math.min(chunk.length, offset + SLICE);
      const part = offset === 0 && end === chunk.length ? chunk : chunk.subarray(offset, end);
      const nested = running !== undefined;
      const base = place(part, nested);
      let result: number;
      let position: number;
      const outer = running;
      running = { parser: this, base, chunk: part, text: "", textStart: 0, textEnd: 0 };
      this.#lastEnd = base;
      this.#depth++;
      try {
        result = wasm.llhttp_execute(this.pointer, base, part.length);
        position = result === OK ? part.length : wasm.llhttp_get_error_pos(this.pointer) - base;
        if (result === OK && this.#inBody) result = this.#bodyQuiet(base + part.length);
      } finally {
        running = outer;
        this.#depth--;
        if (nested) wasm.free(base);
        this.#freeIfClosed();
      }
      // Closed from one of its own callbacks: llhttp's struct is gone, nothing more is parsed.
      if (this.#closed) return result === OK ? end : offset + position;
      if (result === OK) {
        offset = end;
        continue;
      }
      if (result === PAUSED_UPGRADE) {
        this.#upgraded = true;
        wasm.llhttp_resume_after_upgrade(this.pointer);
        return offset + position;
      }
      if (result === PAUSED && this.#paused) {
        this.#paused = false;
        wasm.llhttp_resume(this.pointer);
        offset += position;
        if (this.#stop) {
          this.#stop = false;
          return offset;
        }
        continue;
      }
      return this.#failed(result);
    } while (offset < chunk.length);
    return chunk.length;
  }

  finish(): ParseFailure | undefined {
    if (this.#rawLeft > 0) return { code: "HPE_INVALID_EOF_STATE", reason: `the stream ended ${this.#rawLeft} bytes before the end of the body` };
    if (this.#closed) return undefined;
    const outer = running;
    running = { parser: this, base: 0, chunk: Buffer.alloc(0), text: "", textStart: 0, textEnd: 0 };
    this.#depth++;
    let result: number;
    try {
      result = llhttp!.llhttp_finish(this.pointer);
    } finally {
      running = outer;
      this.#depth--;
      this.#freeIfClosed();
    }
    return result === OK || result === PAUSED || result === PAUSED_UPGRADE ? undefined : this.#failed(result);
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    // Freeing the struct while llhttp runs over it is not allowed: then it is freed on the way out.
    this.#freeIfClosed();
  }

  #freeIfClosed(): void {
    if (this.#closed && this.#depth === 0 && this.pointer !== 0) {
      llhttp!.llhttp_free(this.pointer);
      (this as { pointer: number }).pointer = 0;
    }
  }

  #failed(result: number): ParseFailure {
    const wasm = llhttp!;
    if (result === USER && this.#failure !== undefined) return this.#failure;
    return { code: cString(wasm.llhttp_errno_name(result)), reason: this.#closed && this.pointer === 0 ? "" : cString(wasm.llhttp_get_error_reason(this.pointer)) };
  }

  /** Node's header-size rule: url, status, names and values together stay under the limit. */
  #track(length: number): number {
    this.#headerBytes += length;
    if (this.#headerBytes < this.#maxHeaderBytes) return OK;
    this.#failure = { code: "HPE_HEADER_OVERFLOW", reason: "Header overflow" };
    return USER;
  }

  /**
   * Node's chunk-extension rule, from what this build reports: it has no callback for chunk
   * extensions, so the bytes of a body that reach no callback (a chunk's size line with its
   * extensions, CRLFs) are counted between data callbacks, and more than Node allows for the
   * extensions alone is refused. Stricter than Node by the few bytes of framing counted with them.
   */
  #bodyQuiet(at: number): number {
    this.#quiet += at - this.#lastEnd;
    if (this.#quiet <= MAX_CHUNK_EXTENSIONS) return OK;
    this.#failure = { code: "HPE_CHUNK_EXTENSIONS_OVERFLOW", reason: "Chunk extensions overflow" };
    return USER;
  }

  #text(at: number, length: number): string {
    const run = running!;
    if (at < run.textStart || at + length > run.textEnd) {
      // One latin1 decode covers the head's (and the next heads') small fields: a call into C++
      // per field cost more than the parse.
      const start = at - run.base;
      const end = Math.min(run.chunk.length, Math.max(start + length, start + TEXT_WINDOW));
      run.text = run.chunk.toString("latin1", start, end);
      run.textStart = at;
      run.textEnd = at + (end - start);
    }
    return run.text.slice(at - run.textStart, at - run.textStart + length);
  }

  #data(at: number, length: number): number {
    const result = this.#inBody ? this.#bodyQuiet(at) : OK;
    this.#quiet = 0;
    this.#lastEnd = at + length;
    return result;
  }

  #flushHeader(): void {
    if (this.#last === VALUE) {
      this.#fields.push(this.#field, trimEnd(this.#value));
    } else if (this.#last === FIELD) {
      this.#fields.push(this.#field, "");
    }
    this.#last = NONE;
  }

  onMessageBegin(): number {
    this.#headerBytes = 0;
    this.#url = "";
    this.#statusMessage = "";
    this.#fields = [];
    this.#last = NONE;
    this.#inBody = false;
    this.#failure = undefined;
    this.#events.onMessageBegin?.();
    return OK;
  }

  onUrl(at: number, length: number): number {
    const result = this.#track(length);
    if (result !== OK) return result;
    this.#data(at, length);
    this.#url += this.#text(at, length);
    return OK;
  }

  onStatus(at: number, length: number): number {
    const result = this.#track(length);
    if (result !== OK) return result;
    this.#data(at, length);
    this.#statusMessage += this.#text(at, length);
    return OK;
  }

  onHeaderField(at: number, length: number): number {
    let result = this.#track(length);
    if (result === OK) result = this.#data(at, length);
    if (result !== OK) return result;
    const text = this.#text(at, length);
    if (this.#last === FIELD) {
      this.#field += text;
    } else {
      this.#flushHeader();
      this.#field = text;
      this.#last = FIELD;
    }
    return OK;
  }

  onHeaderValue(at: number, length: number): number {
    let result = this.#track(length);
    if (result === OK) result = this.#data(at, length);
    if (result !== OK) return result;
    const text = this.#text(at, length);
    if (this.#last === VALUE) {
      this.#value += text;
    } else {
      this.#value = text;
      this.#last = VALUE;
    }
    return OK;
  }

  onHeadersComplete(status: number, upgrade: boolean, keepAlive: boolean): number {
    this.#flushHeader();
    const rawHeaders = this.#fields;
    this.#fields = [];
    this.#headerBytes = 0;
    this.#inBody = true;
    this.#quiet = 0;
    const wasm = llhttp!;
    const head: MessageHead = {
      method: this.#request ? methodName(wasm.llhttp_get_method(this.pointer)) : "",
      url: this.#request ? this.#url : "",
      status: this.#request ? 0 : status,
      statusMessage: this.#request ? "" : this.#statusMessage,
      httpMajor: wasm.llhttp_get_http_major(this.pointer),
      httpMinor: wasm.llhttp_get_http_minor(this.pointer),
      rawHeaders,
      upgrade,
      keepAlive,
    };
    this.#url = "";
    this.#statusMessage = "";
    return afterHead(head, this.#events, (length, stop) => {
      this.#rawLeft = length;
      this.#paused = true;
      this.#stop = stop;
    });
  }

  onBody(at: number, length: number): number {
    const result = this.#data(at, length);
    if (result !== OK) return result;
    if (length === 0) return OK;
    const start = at - running!.base;
    const chunk = running!.chunk;
    this.#events.onBody(start === 0 && length === chunk.length ? chunk : chunk.subarray(start, start + length));
    return OK;
  }

  onMessageComplete(): number {
    this.#flushHeader();
    const trailers = this.#fields.length > 0 ? this.#fields : EMPTY;
    this.#fields = [];
    this.#inBody = false;
    this.#headerBytes = 0;
    this.#events.onComplete(trailers);
    return OK;
  }
}

function trimEnd(value: string): string {
  let end = value.length;
  while (end > 0 && (value.charCodeAt(end - 1) === 0x20 || value.charCodeAt(end - 1) === 0x09)) end--;
  return end === value.length ? value : value.slice(0, end);
}
