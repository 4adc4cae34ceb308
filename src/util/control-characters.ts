const CONTROL_CHARACTERS = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g;
const NAMED_ESCAPES: Readonly<Record<string, string>> = { "\n": "\\n", "\r": "\\r", "\t": "\\t" };

/**
 * C0 and C1 control characters, DEL and the Unicode line separators as visible escapes (\n, \x1b,
 * \u2028), for text that came from elsewhere and goes to a terminal or a log line: a newline
 * there would start a forged line, an ESC or CSI byte would drive the terminal (OSC 52 writes
 * the clipboard, CSI 2K and CR overprint a line).
 */
export function escapeControlCharacters(text: string): string {
  return text.replace(CONTROL_CHARACTERS, (c) => NAMED_ESCAPES[c] ?? (c.charCodeAt(0) <= 0xff ? `\\x${c.charCodeAt(0).toString(16).padStart(2, "0")}` : `\\u${c.charCodeAt(0).toString(16)}`));
}
