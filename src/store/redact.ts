/**
 * Hides the password of a connection string before it goes into a message or a log.
 * Works on strings that are not valid URLs too, and errs on the side of hiding more:
 * everything from the first ':' of the authority up to the last '@' is replaced.
 */
export function redactConnectionString(value: string): string {
  let out = value;
  const schemeEnd = out.indexOf("://");
  if (schemeEnd >= 0) {
    const authorityStart = schemeEnd + 3;
    const at = out.lastIndexOf("@");
    const colon = out.indexOf(":", authorityStart);
    if (at > authorityStart && colon >= 0 && colon < at) {
      out = `${out.slice(0, colon)}:***${out.slice(at)}`;
    }
  }
  // libpq also accepts the password as a query parameter or a key=value pair.
  // A quoted value ends at its closing quote, past `\'` escapes (libpq).
  return out.replace(/(password\s*=\s*)('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|[^&\s]*)/gi, "$1***");
}
