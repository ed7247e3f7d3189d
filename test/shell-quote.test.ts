// The one POSIX shell quoting: what sh reads back is the word given, quoted always for the runner's
// command lines, bare where that is safe for a person reading a command.
import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { shellQuote, shellWord } from '../src/shell-quote.js';

const words = ['plain', '', 'two words', "it's", '$HOME `id` $(id)', 'a\nb', '*?[]', '-n', 'é€', "'", '\\'];

/** The arguments sh hands printf when it reads `line`, each between < and >. */
function readBack(line: string): string {
  return execFileSync('sh', ['-c', `printf '<%s>' ${line}`], { encoding: 'utf8' });
}

describe('shellQuote', () => {
  it('makes every word one argument that sh reads back unchanged', () => {
    expect(readBack(words.map(shellQuote).join(' '))).toBe(words.map((word) => `<${word}>`).join(''));
    expect(shellQuote('plain')).toBe("'plain'");
  });

  it('refuses a NUL, which no argument can carry', () => {
    expect(() => shellQuote('a\0b')).toThrow('cannot pass a NUL byte in a shell argument: "a\\u0000b"');
  });
});

describe('shellWord', () => {
  it('leaves a word bare when sh reads it back unchanged, and quotes the rest as shellQuote does', () => {
    expect(readBack(words.map(shellWord).join(' '))).toBe(words.map((word) => `<${word}>`).join(''));
    expect(words.map(shellWord)).toEqual(['plain', "''", "'two words'", "'it'\\''s'", "'$HOME `id` $(id)'", "'a\nb'", "'*?[]'", '-n', "'é€'", "''\\'''", "'\\'"]);
  });
});
