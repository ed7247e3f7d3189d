// Quoting for POSIX sh, in one place: the runner's command lines are built with it, and `drover show`
// prints a container's command with it.

/**
 * `word` single-quoted, so sh reads it back unchanged as one argument whatever it holds. A NUL is
 * refused: no argument can carry one, so the word would silently arrive cut short.
 */
export function shellQuote(word: string): string {
  if (word.includes('\0')) throw new Error(`cannot pass a NUL byte in a shell argument: ${JSON.stringify(word)}`);
  return `'${word.replace(/'/g, `'\\''`)}'`;
}

/** As shellQuote, but bare when sh reads the word back unchanged without quotes: a command as a person reads it. */
export function shellWord(word: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(word) ? word : shellQuote(word);
}
