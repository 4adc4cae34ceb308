import type { Command } from "commander";

export function registerDemoCommand(program: Command): void {
  program
    .command("demo")
    .description("start a CA, two services in different runtimes behind sidecars and one SDK service, and show mTLS working, a policy denial and plaintext refused")
    .option("--once", "run the checks and exit 0 (all passed) or 1")
    .option("--keep", "keep the working directory (certificates, logs) afterwards")
    .action(async (opts) => {
      // Loaded when it runs: the demo starts a CA, sidecars and an SDK service.
      const { runDemo } = await import("./demo/run.ts");
      const ok = await runDemo({
        once: opts.once === true,
        keep: opts.keep === true,
        say: (line) => process.stdout.write(`${line}\n`),
      });
      process.exitCode = ok ? 0 : 1;
    });
}
