import { isMeshwardError } from "../../src/errors.ts";

/**
 * The code and message of the MeshwardError `promise` rejects with. Any other error is rethrown,
 * and a promise that resolves fails the test with `accepted` (what went wrong, e.g. "the CA signed").
 */
export async function refusal(promise: Promise<unknown>, accepted: string): Promise<{ code: string; message: string }> {
  try {
    await promise;
  } catch (error) {
    if (isMeshwardError(error)) return { code: error.code, message: error.message };
    throw error;
  }
  throw new Error(`expected a refusal, but ${accepted}`);
}
