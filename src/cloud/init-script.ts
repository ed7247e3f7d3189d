// The script a new instance runs as root at first boot (EC2 user data; a GCE startup-script, which
// runs at every boot): it installs the dispatcher's SSH public key and the instance secret, which
// the SSH executor reads back on first contact before it pins the host key. Pure: text in, text out.

import { randomBytes } from 'node:crypto';
import { shellQuote } from '../shell-quote.js';
import type { CreateRequest, InstanceType, LaunchConfig, Tags } from './driver.js';

/** Where the instance secret lives, relative to the login user's home directory. */
export const instanceSecretFile = '.drover/instance-secret';

/** Prints the instance secret when run as the login user over SSH. */
export const readInstanceSecretCommand = `cat "$HOME/${instanceSecretFile}"`;

export interface InitScriptOptions {
  /** The user the dispatcher logs in as; created when the image lacks it. */
  username: string;
  /** OpenSSH public key line, e.g. `ssh-ed25519 AAAA... drover`. */
  sshPublicKey: string;
  /** Hex, as the pool generates it. */
  secret: string;
  /**
   * The user's home directory, for tests that run the script without root. Left out, the script
   * asks the system (`getent passwd`), as it must on a real instance.
   */
  home?: string;
}

const USERNAME = /^[a-z_][a-z0-9_.-]*$/i;
const PUBLIC_KEY = /^[a-z0-9@.-]+ [A-Za-z0-9+/]+={0,3}( [^\n\r\0]*)?$/;
const SECRET = /^[0-9a-f]+$/;

export function initScript(options: InitScriptOptions): string {
  const { username, secret, home } = options;
  const sshPublicKey = options.sshPublicKey.trim();
  if (!USERNAME.test(username)) throw new Error(`initScript: ${JSON.stringify(username)} is not a usable login name`);
  if (!PUBLIC_KEY.test(sshPublicKey)) throw new Error('initScript: sshPublicKey must be one OpenSSH public key line (type, base64, optional comment)');
  if (!SECRET.test(secret)) throw new Error('initScript: the secret must be lowercase hex');
  if (home !== undefined && (home === '' || home.includes('\0') || home.includes('\n'))) {
    throw new Error('initScript: home must be a non-empty path on one line');
  }
  const findHome =
    home === undefined ? `home=$(getent passwd "$user" | cut -d: -f6)` : `home=${shellQuote(home)}`;
  return `#!/bin/sh
# Drover instance init: installs the dispatcher's SSH key and this instance's secret.
# It runs as root, on GCE at every boot, in a home the user owns: nothing is written, chmod-ed or
# chown-ed through a path the user could have made a symbolic link. -C: a \`>\` never opens an
# existing file, so a temp file planted between its removal and its write fails the script.
set -euC
user=${shellQuote(username)}
key=${shellQuote(sshPublicKey)}
secret=${shellQuote(secret)}
# The last check covers a user created meanwhile (GCE's guest agent), when useradd then fails and
# the fallback, BusyBox's adduser -D, is missing or is Debian's, which has no -D.
id "$user" >/dev/null 2>&1 || useradd -m -s /bin/sh "$user" || adduser -D -s /bin/sh "$user" || id "$user" >/dev/null 2>&1
${findHome}
if [ -z "$home" ] || [ ! -d "$home" ]; then
  echo "drover init: no home directory for $user" >&2
  exit 1
fi
group=$(id -g "$user")
# Refuses a path the script is about to write that is a symbolic link, or not a regular file.
refuse_odd_file() {
  if [ -L "$1" ]; then
    echo "drover init: $1 is a symbolic link; refusing to write through it. Remove it and run this script again." >&2
    exit 1
  fi
  if [ -e "$1" ] && [ ! -f "$1" ]; then
    echo "drover init: $1 is not a regular file; refusing to replace it. Remove it and run this script again." >&2
    exit 1
  fi
}
# Each file is written to a new private temp file, then renamed over its name: a rename replaces
# the name without following a link there, and a reader never sees half of the file.
install_temp() {
  chown -h "$user:$group" "$1.tmp"
  mv -f "$1.tmp" "$1"
}
umask 077
for dir in "$home/.drover" "$home/.ssh"; do
  if [ -L "$dir" ]; then
    echo "drover init: $dir is a symbolic link; refusing to write through it. Remove it and run this script again." >&2
    exit 1
  fi
  mkdir -p "$dir"
  chmod 0700 "$dir"
  chown -h "$user:$group" "$dir"
done
secret_file="$home/${instanceSecretFile}"
keys="$home/.ssh/authorized_keys"
refuse_odd_file "$secret_file"
refuse_odd_file "$keys"
rm -f "$secret_file.tmp" "$keys.tmp"
# The secret first, then the key: once the dispatcher can log in, the secret is there to read.
printf '%s\\n' "$secret" >"$secret_file.tmp"
install_temp "$secret_file"
{
  if [ -f "$keys" ]; then
    cat "$keys"
    # A last line without its newline would run into ours.
    if [ -n "$(tail -c 1 "$keys")" ]; then echo; fi
    grep -qxF -e "$key" "$keys" || printf '%s\\n' "$key"
  else
    printf '%s\\n' "$key"
  fi
} >"$keys.tmp"
install_temp "$keys"
`;
}

/** A fresh instance secret: 32 random bytes as hex, as the init script accepts. */
export function newInstanceSecret(): string {
  return randomBytes(32).toString('hex');
}

/**
 * The create request for an instance whose tags carry `secret`: with `launch` (real VMs) it also
 * carries the init script that writes the secret and installs the dispatcher's key.
 */
export function createRequest(
  instanceType: InstanceType,
  tags: Tags,
  launch: { username: string; sshPublicKey: string } | undefined,
  secret: string,
  launchConfig?: LaunchConfig,
): CreateRequest {
  const request: CreateRequest = launchConfig ? { instanceType, tags, launchConfig } : { instanceType, tags };
  if (!launch) return request;
  return { ...request, initScript: initScript({ ...launch, secret }), sshPublicKey: launch.sshPublicKey };
}
