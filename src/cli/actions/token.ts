// What `meshward token` does; what it accepts (its flags, its help) is ../token.ts.
import type { OptionValues } from "commander";
import { readCaState } from "../../ca/anchors.ts";
import { issueJoinToken } from "../../ca/tokens.ts";
import { MeshwardError } from "../../errors.ts";
import { formatWorkloadId } from "../../spiffe/id.ts";
import { describeTimeLeft } from "../../util/duration.ts";
import { flagDuration } from "../duration-flags.ts";
import { flagValue } from "../usage.ts";
import { wholeNumber } from "../options.ts";
import { withCaStore } from "../store.ts";

/** `meshward token create`: a join token bound to one workload identity. */
export async function tokenCreate(opts: OptionValues): Promise<void> {
  const state = readCaState(opts.dir);
  // The trust domain is the CA's (validated in ca.json): what can fail here is --namespace or --app-id.
  const spiffeId = flagValue(() => formatWorkloadId({ trustDomain: state.trustDomain, namespace: opts.namespace, appId: opts.appId }));
  const ttlMs = flagDuration(opts.ttl, "--ttl");
  // A token that expires at once is dead on arrival: refused rather than stored.
  if (ttlMs < 1000) throw new MeshwardError("E_USAGE", `--ttl ${JSON.stringify(opts.ttl)} is too short: a join token must stay usable at least 1s (the default is 1h)`);
  // Digits only: Number() also read "0x10" as 16 and "1e3" as 1000.
  const uses = wholeNumber(opts.uses, "--uses") as number;
  if (uses < 1 || uses > 1_000_000) {
    throw new MeshwardError("E_USAGE", `--uses must be a whole number from 1 to 1000000, got ${JSON.stringify(opts.uses)}`);
  }
  const dnsNames = (opts.dnsName as string[] | undefined) ?? [];
  for (const name of dnsNames) {
    if (!/^(?=.{1,253}$)(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/i.test(name)) {
      throw new MeshwardError("E_USAGE", `--dns-name ${JSON.stringify(name)} is not a valid DNS name`);
    }
  }
  const now = new Date();
  const commonName: string | undefined = opts.commonName === true ? opts.appId : undefined;
  if (commonName !== undefined && commonName.length > 64) {
    throw new MeshwardError("E_USAGE", `--common-name: the app id is ${commonName.length} characters long; a certificate's CN holds at most 64`);
  }
  const { token: secret, id, expiresAt } = await withCaStore(opts.dir, opts.store, (store) =>
    issueJoinToken(store, { spiffeId, dnsNames, ttlMs, uses, now, ...(commonName !== undefined ? { commonName } : {}) }),
  );
  process.stdout.write(
    `join token ${id} for ${spiffeId}: ${uses} use${uses === 1 ? "" : "s"}, expires ${expiresAt.toISOString()} (${describeTimeLeft(expiresAt, now)})` +
      `${dnsNames.length > 0 ? `, DNS names ${dnsNames.join(", ")}` : ""}${commonName !== undefined ? `, subject CN=${commonName}` : ""}\n${secret}\n`,
  );
}
