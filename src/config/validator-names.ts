/**
 * Validator names come in two spellings: Dapr's enum (`JOIN_TOKEN`, `KUBERNETES`, which the
 * docs and the sidecar config use) and the CLI's (`join-token`, `kubernetes`). Both are
 * accepted everywhere, in any case (issue 15, item 6); this gives the CLI spelling.
 */
export function validatorFlagName(value: string): string {
  return value.trim().toLowerCase().replace(/_/g, "-");
}

/** The same name in Dapr's enum spelling (`join-token` → `JOIN_TOKEN`). */
export function validatorEnumName(value: string): string {
  return value.trim().toUpperCase().replace(/-/g, "_");
}
