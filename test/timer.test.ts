// src/timer.ts: timeouts beyond Node's 2^31-1 ms limit wait their whole length (issue: a
// client's 3e9 ms timeout used to fire after ~1 ms).
import assert from 'node:assert/strict';
import { test, mock } from 'node:test';
import { MAX_TIMER_MS, setLongTimeout } from '../src/timer.js';

test('a 3e9 ms timeout fires after 3e9 ms, not before', () => {
  mock.timers.enable({ apis: ['setTimeout'] });
  try {
    let fired = 0;
    setLongTimeout(() => fired++, 3e9);
    mock.timers.tick(MAX_TIMER_MS);
    assert.equal(fired, 0, 'still waiting after the first step');
    mock.timers.tick(3e9 - MAX_TIMER_MS - 1);
    assert.equal(fired, 0, 'still waiting 1 ms before the end');
    mock.timers.tick(1);
    assert.equal(fired, 1);
  } finally {
    mock.timers.reset();
  }
});

test('clear() cancels at any step; short timeouts behave like setTimeout', () => {
  mock.timers.enable({ apis: ['setTimeout'] });
  try {
    let fired = 0;
    const long = setLongTimeout(() => fired++, 5e9);
    mock.timers.tick(MAX_TIMER_MS + 10);
    long.clear();
    mock.timers.tick(5e9);
    assert.equal(fired, 0);
    setLongTimeout(() => fired++, 10);
    mock.timers.tick(9);
    assert.equal(fired, 0);
    mock.timers.tick(1);
    assert.equal(fired, 1);
  } finally {
    mock.timers.reset();
  }
});
