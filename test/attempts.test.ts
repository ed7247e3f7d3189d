// How the pool reads a runner `start` answer: whose fault a refusal is, and when only a list can tell.
import { describe, expect, it } from 'vitest';
import { classifyStart } from '../src/pool/attempts.js';
import { AllocationLedger } from '../src/pool/ledger.js';
import type { CommandResult } from '../src/ssh/executor.js';

const answer = (exitCode: number | null, stderr = ''): CommandResult => ({ stdout: '', stderr, exitCode });

describe('classifyStart', () => {
  it('0 and 3 (already there) are started, at the time of the answer', () => {
    expect(classifyStart(answer(0), 10, 15, 'i-1')).toEqual({ kind: 'started', at: 15 });
    expect(classifyStart(answer(3, 'exists'), 10, 15, 'i-1')).toEqual({ kind: 'started', at: 15 });
  });

  it('bad arguments (2) are the container\'s fault; other refusals the instance\'s', () => {
    expect(classifyStart(answer(2, 'bad env'), 10, 15, 'i-1')).toMatchObject({ kind: 'refused', fault: 'container' });
    expect(classifyStart(answer(1, 'disk full'), 10, 15, 'i-1')).toEqual({
      kind: 'refused',
      fault: 'instance',
      reason: 'runner start on i-1 exited with 1: disk full',
    });
    expect(classifyStart(answer(4), 10, 15, 'i-1')).toMatchObject({ kind: 'refused', fault: 'instance' });
  });

  it('"could not tell" (5) and a start ended by a signal are uncertain from when the start was sent', () => {
    expect(classifyStart(answer(5, 'no pid'), 10, 15, 'i-1')).toMatchObject({ kind: 'uncertain', sentAt: 10 });
    expect(classifyStart(answer(null), 10, 15, 'i-1')).toMatchObject({ kind: 'uncertain', sentAt: 10 });
    expect(classifyStart(answer(137), 10, 15, 'i-1')).toMatchObject({ kind: 'uncertain', sentAt: 10 });
  });
});

describe('AllocationLedger', () => {
  // The actor is not used by the ledger's sums; a placeholder keeps the test about arithmetic.
  const actor = {} as never;
  const demand = { vcpus: 2, ramMiB: 1024, scratchGiB: 1, gpus: 0 };

  it('sums what holding containers take per worker, frees on release, forgets on remove', () => {
    const ledger = new AllocationLedger();
    ledger.add({ uuid: 'a', workerId: 'w', instanceId: 'i', instanceType: 't', demand, actor, holds: true });
    ledger.add({ uuid: 'b', workerId: 'w', instanceId: 'i', instanceType: 't', demand, actor, holds: true });
    expect(ledger.holdingOn('w')).toBe(2);
    expect(ledger.usedOn('w')).toEqual({ vcpus: 4, ramMiB: 2048, scratchGiB: 2, gpus: 0 });
    expect(ledger.release('a')).toBe(true);
    expect(ledger.release('a')).toBe(false);
    expect(ledger.holdingOn('w')).toBe(1);
    expect(ledger.on('w').map((allocation) => allocation.uuid)).toEqual(['a', 'b']);
    ledger.remove('b');
    expect(ledger.usedOn('w')).toEqual({ vcpus: 0, ramMiB: 0, scratchGiB: 0, gpus: 0 });
    ledger.remove('a');
    expect(ledger.on('w')).toEqual([]);
    expect(() => {
      ledger.add({ uuid: 'c', workerId: 'w', instanceId: 'i', instanceType: 't', demand, actor, holds: true });
      ledger.add({ uuid: 'c', workerId: 'w', instanceId: 'i', instanceType: 't', demand, actor, holds: true });
    }).toThrow(/already allocated/);
  });
});
