/**
 * Files the CLI writes into the data dir (`outpost tokens`, `outpost db encrypt|decrypt`) must stay
 * usable by the service. An operator runs the CLI as root, and the service runs as its own user
 * (systemd's `DynamicUser`): a root-owned `ingest-tokens.json` (0600) made every ingest token
 * refused (503), a root-owned `outpost.db` left the store read-only. So such a file is given to the
 * owner of what it replaces, or of the data dir. Only root can give a file away; anyone else
 * already writes as that owner, or gets EPERM, which is then not an error.
 */
export function giveToOwnerOf(path: string, reference: string): void {
  let owner: Deno.FileInfo;
  try {
    owner = Deno.statSync(reference);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return;
    throw error;
  }
  if (owner.uid === null || owner.gid === null) return;
  try {
    Deno.chownSync(path, owner.uid, owner.gid);
  } catch (error) {
    if (!(error instanceof Deno.errors.PermissionDenied)) throw error;
  }
}
