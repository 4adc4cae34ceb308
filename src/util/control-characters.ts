const CONTROL_CHARACTERS = /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;
const NAMED_ESCAPES: Readonly<Record<string, string>> = { "\n": "\\n", "\r": "\\r", "\t": "\\t" };

/**
 * C0 and C1 control characters, DEL, the Unicode line separators and the bidirectional controls
 * as visible escapes (\n, \x1b, \u2028, \u202e), for text that came from elsewhere and goes to a
 * terminal or a log line: a newline there would start a forged line, an ESC or CSI byte would
 * drive the terminal (OSC 52 writes the clipboard, CSI 2K and CR overprint a line), and a bidi
 * override or isolate reorders what is shown after it (CVE-2021-42574, "Trojan Source").
 */
export function escapeControlCharacters(text: string): string {
  return text.replace(CONTROL_CHARACTERS, (c) => NAMED_ESCAPES[c] ?? (c.charCodeAt(0) <= 0xff ? `\\x${c.charCodeAt(0).toString(16).padStart(2, "0")}` : `\\u${c.charCodeAt(0).toString(16)}`));
}
