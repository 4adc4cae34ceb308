// What `meshward sidecar` does; what it accepts (its flags, its help) is ../sidecar.ts.
import type { OptionValues } from "commander";
import { isMeshwardError } from "../../errors.ts";
import { startSidecar } from "../../proxy/sidecar.ts";
import { cliLogger } from "../logger.ts";
import { untilSignal, warnTokenOnCommandLine } from "../options.ts";
import { buildSidecarConfig } from "../sidecar-config.ts";

/** `meshward sidecar`: runs until SIGTERM (drains) or SIGINT. */
export async function runSidecar(opts: OptionValues): Promise<void> {
  const config = buildSidecarConfig(opts);
  const logger = cliLogger("sidecar", { logFormat: config.logFormat, logLevel: config.logLevel });
  // The flag only: a token in the config file is in a file, which is what the warning asks for.
  if (opts.token !== undefined) warnTokenOnCommandLine(logger);
  // Before the first certificate: the CA may be down and the sidecar retrying on unref'd
  // timers only, which would let the process exit (code 13) instead of waiting for it.
  const stopped = untilSignal();
  const stopStarting = new AbortController();
  void stopped.then(() => stopStarting.abort());
  const sidecar = await startSidecar(config, { logger, stopSignal: stopStarting.signal }).catch((error: unknown) => {
    if (isMeshwardError(error) && error.code === "E_STOPPED") return undefined;
    throw error;
  });
  if (sidecar === undefined) {
    logger.info({ event: "stopped" }, "stopped before the first certificate arrived");
    return;
  }
  process.stdout.write(`${sidecar.readyLine()}\n`);
  const signal = await stopped;
  logger.info({ event: "signal", signal }, "shutting down");
  const forced = () => {
    logger.warn({ event: "forced-exit" }, "second signal: closing at once");
    void sidecar.close().then(() => process.exit(1));
  };
  process.once("SIGTERM", forced);
  process.once("SIGINT", forced);
  await sidecar.drain();
  process.off("SIGTERM", forced);
  process.off("SIGINT", forced);
  logger.info({ event: "stopped" }, "sidecar stopped");
}
