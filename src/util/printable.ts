/*
 * Text for a terminal or a CI log (review audit finding 5). File names, evidence, kinds and ignore
 * reasons come from the audited tree: raw, a newline or CR in one started a line of its own, and a
 * line starting with `::` is a GitHub Actions workflow command (`::add-mask::`, `::stop-commands::`,
 * `::error file=…::`); ESC sequences moved the cursor, erased the summary or set the window title.
 * JSON and SARIF need none of this: JSON.stringify escapes every control character.
 */

/** C0 and C1 controls, DEL, the line and paragraph separators, and bidi overrides/isolates. */
const UNPRINTABLE = /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;

/**
 * `text` with every control character (newline, CR, ESC, …), line separator and bidi control
 * written as a `\n`, `\r`, `\t` or `\u001b`-style escape, so that it stays on its line and shows
 * what it holds. `keepNewlines`: `\n` stays (a message of several lines written by meshward).
 */
export function printable(text: string, options: { keepNewlines?: boolean } = {}): string {
  return text.replace(UNPRINTABLE, (char) => {
    if (char === "\n") return options.keepNewlines === true ? "\n" : "\\n";
    if (char === "\r") return "\\r";
    if (char === "\t") return "\\t";
    return `\\u${char.charCodeAt(0).toString(16).padStart(4, "0")}`;
  });
}

/**
 * Every line of `text` that a CI runner would take for a workflow command (`::` first, after
 * whitespace and colour codes) gets its first `:` written as `\u003a`: meshward itself writes no
 * such line, so one can only come from the audited tree.
 */
export function noWorkflowCommands(text: string): string {
  return text.replace(/^([^\S\n]*(?:\u001b\[[0-9;]*m)*):(?=:)/gm, "$1\\u003a");
}

/** What the text reporters write: each line safe for a terminal and a CI log (see printable). */
export function safeForLog(text: string, options: { keepNewlines?: boolean } = {}): string {
  return noWorkflowCommands(printable(text, options));
}
