/** The logging the TLS and transport layers need; a pino logger fits, as does `console`. */
export interface TlsLogger {
  info(message: string): void;
  warn(message: string): void;
  error(message: string): void;
}

export const consoleLogger: TlsLogger = {
  info: (message) => console.info(`[meshward] ${message}`),
  warn: (message) => console.warn(`[meshward] ${message}`),
  error: (message) => console.error(`[meshward] ${message}`),
};
