import * as models from "kubernetes-models";

/**
 * Validates Kubernetes objects against the OpenAPI schemas of a current release (the
 * `kubernetes-models` package, generated from Kubernetes 1.34's OpenAPI: it knows
 * restartPolicy on containers and MutatingAdmissionPolicy). Like the API server's schema,
 * these validators check types, enums and required fields; they do not refuse unknown fields
 * (kubectl's --validate=strict does), so tests also compare exact output with golden files.
 */
type Model = new (data: unknown) => { validate(): void };
const groups = models as unknown as Record<string, Record<string, Record<string, Model>>>;

export function modelFor(apiVersion: string, kind: string): Model | undefined {
  const [group, version] = apiVersion.includes("/") ? (apiVersion.split("/") as [string, string]) : ["", apiVersion];
  const key = group === "" ? "v1" : group.replace(/\.(\w)/g, (_m, c: string) => c.toUpperCase());
  const exports = group === "" ? (groups.v1 as unknown as Record<string, Model>) : groups[key]?.[version];
  return exports?.[kind];
}

/** Throws with every object's schema errors; a List's items are validated one by one. */
export function validateK8sObjects(objects: readonly unknown[]): number {
  const errors: string[] = [];
  let checked = 0;
  const visit = (object: unknown, where: string) => {
    const { apiVersion, kind, items } = object as { apiVersion?: string; kind?: string; items?: unknown[] };
    if (kind === "List" && Array.isArray(items)) {
      items.forEach((item, index) => visit(item, `${where} items[${index}]`));
      return;
    }
    const Model = apiVersion === undefined || kind === undefined ? undefined : modelFor(apiVersion, kind);
    if (Model === undefined) {
      errors.push(`${where}: no schema for ${apiVersion}/${kind}`);
      return;
    }
    try {
      new Model(object).validate();
      checked += 1;
    } catch (error) {
      errors.push(`${where} ${kind}: ${(error as Error).message}`);
    }
  };
  objects.forEach((object, index) => visit(object, `document ${index + 1}`));
  if (errors.length > 0) throw new Error(errors.join("\n"));
  return checked;
}
