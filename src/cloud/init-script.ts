// The script a new instance runs as root at first boot (EC2 user data, GCE startup-script): it
// installs the dispatcher's SSH public key and the instance secret, which the SSH executor reads
// back on first contact before it pins the host key. Pure: text in, text out.

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
    home === undefined ? `home=$(getent passwd "$user" | cut -d: -f6)` : `home=${quote(home)}`;
  return `#!/bin/sh
# Drover instance init: installs the dispatcher's SSH key and this instance's secret.
set -eu
user=${quote(username)}
key=${quote(sshPublicKey)}
secret=${quote(secret)}
if ! id "$user" >/dev/null 2>&1; then
  useradd -m -s /bin/sh "$user" || adduser -D -s /bin/sh "$user"
fi
${findHome}
if [ -z "$home" ] || [ ! -d "$home" ]; then
  echo "drover init: no home directory for $user" >&2
  exit 1
fi
group=$(id -g "$user")
umask 077
mkdir -p "$home/.drover" "$home/.ssh"
chmod 0700 "$home/.drover" "$home/.ssh"
chown "$user:$group" "$home/.drover" "$home/.ssh"
# The secret first, then the key: once the dispatcher can log in, the secret is there to read.
# Renamed into place so a reader never sees half of it.
printf '%s\\n' "$secret" >"$home/${instanceSecretFile}.tmp"
chmod 0600 "$home/${instanceSecretFile}.tmp"
chown "$user:$group" "$home/${instanceSecretFile}.tmp"
mv -f "$home/${instanceSecretFile}.tmp" "$home/${instanceSecretFile}"
touch "$home/.ssh/authorized_keys"
if ! grep -qxF "$key" "$home/.ssh/authorized_keys"; then
  printf '%s\\n' "$key" >>"$home/.ssh/authorized_keys"
fi
chmod 0600 "$home/.ssh/authorized_keys"
chown "$user:$group" "$home/.ssh/authorized_keys"
`;
}

/** POSIX shell single-quoting. */
function quote(value: string): string {
  return `'${value.replace(/'/g, `'\\''`)}'`;
}
