// The instance secret check on first SSH contact: before a host key is pinned, the instance must
// prove it holds the secret its create call wrote into its tags, or it is not the VM we created.

export class InstanceSecretMismatchError extends Error {
  override readonly name = 'InstanceSecretMismatchError';

  // The secrets stay out of the message: it reaches logs and the API.
  constructor(readonly instanceId: string) {
    super(
      `Instance ${instanceId} does not hold the secret its create call wrote into its tags, so it is ` +
        'not the VM this pool created (or its secret file was changed). The connection was closed ' +
        'and its host key was not pinned.',
    );
  }
}

/**
 * The instance has no secret in its tags though its cloud gives every instance one (real VMs):
 * it was not created by this pool, or its tags were changed, so its host key is never pinned.
 */
export class InstanceSecretMissingError extends Error {
  override readonly name = 'InstanceSecretMissingError';

  constructor(readonly instanceId: string) {
    super(`Instance ${instanceId} has no instance secret in its tags: not pinning its host key. The connection was refused; an instance this pool created always has one.`);
  }
}
