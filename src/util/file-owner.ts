import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { MeshwardError, shownValue } from "../errors.ts";

/** Who owns a file meshward writes (chown), resolved once at start-up. */
export interface FileOwner {
  readonly uid: number;
  readonly gid: number;
  /** As the user typed it, for messages and logs. */
  readonly label: string;
}

/**
 * Resolves `USER[:GROUP]` (names or numeric ids; without GROUP, the user's primary group) the
 * way chown(1) does: /etc/passwd and /etc/group first, then `getent` (NSS: LDAP, sssd, …).
 * Throws E_USAGE for an unknown name, before anything is written or any token is spent. A refused
 * value is shown as every flag value is (shownValue: quoted, escaped, at most 40 characters).
 */
export function resolveFileOwner(spec: string, flag = "--owner"): FileOwner {
  const match = /^([^:\s]+)(?::([^:\s]+))?$/.exec(spec.trim());
  if (match === null) throw new MeshwardError("E_USAGE", `${flag} ${shownValue(spec)}: expected USER or USER:GROUP (names or numeric ids)`);
  const [, user, group] = match as unknown as [string, string, string | undefined];
  const account = /^\d+$/.test(user) ? { uid: numericId(user, flag), gid: lookup("passwd", user, 2, 3)?.[1] } : lookupUser(user, flag);
  let gid: number | undefined;
  if (group !== undefined) {
    if (/^\d+$/.test(group)) gid = numericId(group, flag);
    else {
      const found = lookup("group", group, 2, 2);
      if (found === undefined) throw new MeshwardError("E_USAGE", `${flag} ${shownValue(spec)}: no group named ${shownValue(group)} on this host`);
      gid = found[0];
    }
  } else gid = account.gid;
  // user is a valid id here (numericId): at most 10 digits.
  if (gid === undefined) throw new MeshwardError("E_USAGE", `${flag} ${shownValue(spec)}: user id ${user} has no entry in the user database, so give the group too (${user}:GROUP)`);
  for (const id of [account.uid, gid]) {
    if (!validId(id)) throw new MeshwardError("E_USAGE", `${flag} ${shownValue(spec)}: ${id} is not a valid user or group id`);
  }
  return { uid: account.uid, gid, label: spec.trim() };
}

const validId = (id: number): boolean => Number.isSafeInteger(id) && id >= 0 && id <= 0xfffffffe;

/** A user or group id given as digits; E_USAGE (the digits shortened) when it is out of range. */
function numericId(digits: string, flag: string): number {
  const id = Number(digits);
  if (!validId(id)) throw new MeshwardError("E_USAGE", `${flag} ${shownValue(digits)}: not a valid user or group id (0 to 4294967294)`);
  return id;
}

/** Resolves a GROUP (name or numeric id) like chown(1); E_USAGE for an unknown name. */
export function resolveGroup(spec: string, flag: string): number {
  const group = spec.trim();
  let gid: number;
  if (/^\d+$/.test(group)) gid = numericId(group, flag);
  else if (/^[^:\s]+$/.test(group)) {
    const found = lookup("group", group, 2, 2);
    if (found === undefined) throw new MeshwardError("E_USAGE", `${flag}: no group named ${shownValue(group)} on this host`);
    gid = found[0];
  } else throw new MeshwardError("E_USAGE", `${flag} ${shownValue(spec)}: expected a group name or numeric id`);
  if (!validId(gid)) throw new MeshwardError("E_USAGE", `${flag} ${shownValue(spec)}: ${gid} is not a valid group id`);
  return gid;
}

/**
 * Why this process may not give a file it owns to group `gid` (chown(2): an unprivileged owner
 * may choose only among its own groups), or undefined when it may: root, or a member (primary or
 * supplementary). Asked before anything is bound or any token is spent.
 */
export function groupChangeRefusal(gid: number): string | undefined {
  const uid = process.getuid?.();
  if (uid === undefined || uid === 0) return undefined;
  const mine = [...new Set([process.getgid?.(), ...(process.getgroups?.() ?? [])].filter((g): g is number => g !== undefined))];
  if (mine.includes(gid)) return undefined;
  return `this process (uid ${uid}) is not root and not a member of group ${groupLabel(gid)} (its groups: ${mine.map(groupLabel).join(", ")}); chown(2) lets a file's owner give it only to one of its own groups`;
}

/** `name (gid N)`, or `gid N` for a group the database does not name. */
export function groupLabel(gid: number): string {
  const name = lookupGroupName(gid);
  return name === undefined ? `gid ${gid}` : `${name} (gid ${gid})`;
}

function lookupGroupName(gid: number): string | undefined {
  try {
    for (const line of readFileSync("/etc/group", "utf8").split("\n")) {
      const fields = line.split(":");
      if (fields[2] === String(gid) && fields[0] !== undefined && fields[0] !== "") return fields[0];
    }
  } catch {
    // no /etc/group: the number alone
  }
  return undefined;
}

/**
 * Mode of the Workload API socket: octal; its owner reads and writes it; group and others get
 * read+write (6: connecting needs write) or nothing. Every process that can connect receives the
 * identity's private key, so anything wider than 0600 is a choice the operator makes on purpose.
 */
export function parseSocketMode(spec: string, flag: string): number {
  if (!/^0?[0-7]{3}$/.test(spec.trim())) throw new MeshwardError("E_USAGE", `${flag} ${shownValue(spec)}: expected an octal mode such as 0600, 0660 or 0666`);
  const mode = Number.parseInt(spec.trim(), 8);
  const [owner, group, other] = [(mode >> 6) & 7, (mode >> 3) & 7, mode & 7];
  if (owner !== 6 || ![0, 6].includes(group) || ![0, 6].includes(other)) {
    throw new MeshwardError(
      "E_USAGE",
      `${flag} ${spec.trim()}: a socket is opened for reading and writing (connecting needs write), so each of group and others gets rw- or nothing, and its owner rw-: 0600 (default), 0660 (group) or 0666 (every local user)`,
    );
  }
  return mode;
}

function lookupUser(name: string, flag: string): { uid: number; gid: number } {
  const found = lookup("passwd", name, 2, 3);
  if (found === undefined) throw new MeshwardError("E_USAGE", `${flag}: no user named ${shownValue(name)} on this host`);
  return { uid: found[0], gid: found[1] };
}

/** [field a, field b] (numbers) of the entry named `name` (or with that id) in /etc/<db>, else from getent. */
function lookup(db: "passwd" | "group", name: string, a: number, b: number): [number, number] | undefined {
  const parse = (text: string): [number, number] | undefined => {
    for (const line of text.split("\n")) {
      const fields = line.split(":");
      if (fields[0] === name || (/^\d+$/.test(name) && fields[2] === name)) return [Number(fields[a]), Number(fields[b])];
    }
    return undefined;
  };
  let local: string | undefined;
  try {
    local = readFileSync(`/etc/${db}`, "utf8");
  } catch {
    local = undefined;
  }
  const fromFile = local === undefined ? undefined : parse(local);
  if (fromFile !== undefined) return fromFile;
  const getent = spawnSync("getent", [db, name], { encoding: "utf8", timeout: 5_000 });
  return getent.status === 0 ? parse(getent.stdout) : undefined;
}

/**
 * Mode of a private key file meshward writes: octal, readable by its owner, at most readable
 * by its group (0600, 0400, 0640, 0440). Anything that lets others read it, or anyone but the
 * owner write it, is refused: a key is a secret.
 */
export function parseKeyFileMode(spec: string, flag = "--mode"): number {
  if (!/^0?[0-7]{3}$/.test(spec.trim())) throw new MeshwardError("E_USAGE", `${flag} ${shownValue(spec)}: expected an octal mode such as 0600 or 0640`);
  const mode = Number.parseInt(spec.trim(), 8);
  if ((mode & 0o400) === 0 || (mode & ~0o740) !== 0) {
    throw new MeshwardError(
      "E_USAGE",
      `${flag} ${spec.trim()}: the key file must stay private: readable by its owner, at most readable (not writable) by its group, nothing for others (0600, 0400, 0640 or 0440)`,
    );
  }
  return mode;
}
