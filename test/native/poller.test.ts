/** Poller: the uv_poll_t watcher (docs/architecture.md, "The native addon"). */
import assert from 'node:assert/strict';
import { AsyncLocalStorage } from 'node:async_hooks';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import readline from 'node:readline';
import { describe, it } from 'node:test';
import { Worker } from 'node:worker_threads';
import { DISCONNECT, EFD_NONBLOCK, native, READABLE, WRITABLE, type Poller } from '../../src/native.js';
import {
  assertErrno,
  assertRangeError,
  assertTypeError,
  checkLeaks,
  childCode,
  collectGarbage,
  nativeModuleUrl,
  runChild,
} from './util.js';
import { sleep, waitFor } from '../helpers/wait.js';

interface Event {
  err: Error | null;
  events: number;
}

/** An eventfd with a Poller recording every callback. */
function watched(): { fd: number; poller: Poller; seen: Event[]; dispose: () => void } {
  const fd = native.eventfd(0, EFD_NONBLOCK);
  const seen: Event[] = [];
  const poller = new native.Poller(fd, (err, events) => {
    seen.push({ err, events });
    native.eventfdRead(fd);
  });
  return {
    fd,
    poller,
    seen,
    dispose: () => {
      poller.close();
      native.close(fd);
    },
  };
}

describe('Poller', () => {
  checkLeaks();

  it('fires READABLE when the eventfd is written, once per readiness', async () => {
    const w = watched();
    try {
      w.poller.start(READABLE);
      await sleep(20);
      assert.equal(w.seen.length, 0, 'no event before a write');
      native.eventfdWrite(w.fd, 1);
      await waitFor(() => w.seen.length === 1);
      assert.deepEqual(w.seen[0], { err: null, events: READABLE });
      await sleep(20);
      assert.equal(w.seen.length, 1, 'drained: no further event');
      native.eventfdWrite(w.fd, 1);
      await waitFor(() => w.seen.length === 2);
    } finally {
      w.dispose();
    }
  });

  it('reports WRITABLE and combined event masks', async () => {
    const w = watched();
    try {
      w.poller.start(READABLE | WRITABLE);
      await waitFor(() => w.seen.length > 0);
      assert.equal(w.seen[0]!.events & WRITABLE, WRITABLE);
    } finally {
      w.dispose();
    }
  });

  it('reports DISCONNECT when a socket peer goes away', async () => {
    const [a, b] = native.socketpair('seqpacket');
    const seen: number[] = [];
    const poller = new native.Poller(a, (_err, events) => {
      seen.push(events);
      poller.stop();
    });
    try {
      poller.start(READABLE | DISCONNECT);
      native.close(b);
      await waitFor(() => seen.length > 0);
      assert.equal(seen[0]! & DISCONNECT, DISCONNECT);
    } finally {
      poller.close();
      native.close(a);
    }
  });

  it('stop() silences it and start() resumes', async () => {
    const w = watched();
    try {
      w.poller.start(READABLE);
      w.poller.stop();
      native.eventfdWrite(w.fd, 1);
      await sleep(30);
      assert.equal(w.seen.length, 0);
      w.poller.start(READABLE);
      await waitFor(() => w.seen.length === 1);
      w.poller.stop();
      w.poller.stop();
    } finally {
      w.dispose();
    }
  });

  it('after close() no callback runs, the fd stays open, and close() is idempotent', async () => {
    const w = watched();
    w.poller.start(READABLE);
    native.eventfdWrite(w.fd, 1);
    w.poller.close();
    w.poller.close();
    await sleep(30);
    assert.equal(w.seen.length, 0);
    // The fd is not ours to close: still usable.
    assert.equal(native.eventfdRead(w.fd), 1);
    // Calls after close: start throws, the rest are no-ops.
    assert.throws(() => w.poller.start(READABLE), { code: 'ERR_INVALID_STATE' });
    w.poller.stop();
    w.poller.ref();
    w.poller.unref();
    native.close(w.fd);
  });

  it('close() inside the callback is safe and ends the callbacks', async () => {
    const fd = native.eventfd(0, EFD_NONBLOCK);
    let calls = 0;
    const poller = new native.Poller(fd, () => {
      calls++;
      // Not draining the eventfd: it stays readable, so only close() can stop the calls.
      poller.close();
      poller.close();
    });
    poller.start(READABLE);
    native.eventfdWrite(fd, 1);
    await waitFor(() => calls > 0);
    await sleep(30);
    assert.equal(calls, 1);
    native.close(fd);
  });

  it('stop() and start() inside the callback work', async () => {
    const fd = native.eventfd(0, EFD_NONBLOCK);
    let calls = 0;
    const poller = new native.Poller(fd, () => {
      calls++;
      poller.stop();
      if (calls === 1) poller.start(READABLE);
    });
    try {
      poller.start(READABLE);
      native.eventfdWrite(fd, 1);
      await waitFor(() => calls === 2);
      await sleep(20);
      assert.equal(calls, 2);
    } finally {
      poller.close();
      native.close(fd);
    }
  });

  it('runs the callback in the async context it was created in, and drains microtasks', async () => {
    const als = new AsyncLocalStorage<string>();
    const fd = native.eventfd(0, EFD_NONBLOCK);
    const seen: (string | undefined)[] = [];
    const poller = als.run(
      'creator',
      () =>
        new native.Poller(fd, () => {
          native.eventfdRead(fd);
          seen.push(als.getStore());
          void Promise.resolve().then(() => seen.push('microtask'));
        }),
    );
    try {
      poller.start(READABLE);
      native.eventfdWrite(fd, 1);
      await waitFor(() => seen.length === 2);
      assert.deepEqual(seen, ['creator', 'microtask']);
    } finally {
      poller.close();
      native.close(fd);
    }
  });

  it('an active poller is not collected while unreferenced from JS', async () => {
    const fd = native.eventfd(0, EFD_NONBLOCK);
    let calls = 0;
    let collected = false;
    const registry = new FinalizationRegistry(() => {
      collected = true;
    });
    (() => {
      // The callback closes over its own poller: a plain JS cycle, rooted only by the
      // native side while the poller is started.
      const p: Poller = new native.Poller(fd, () => {
        calls++;
        native.eventfdRead(fd);
        p.close();
      });
      registry.register(p, 'poller');
      p.start(READABLE);
      p.unref();
    })();
    await collectGarbage();
    await collectGarbage();
    assert.equal(collected, false);
    native.eventfdWrite(fd, 1);
    await waitFor(() => calls === 1);
    // Closed from inside its callback: now it is garbage like any object.
    for (let i = 0; i < 20 && !collected; i++) await collectGarbage();
    assert.equal(collected, true, 'a closed poller must be collectable');
    native.close(fd);
  });

  it('a stopped or never started poller dropped without close() is collected safely', async () => {
    const fd = native.eventfd(0, EFD_NONBLOCK);
    let collected = 0;
    const registry = new FinalizationRegistry(() => {
      collected++;
    });
    (() => {
      for (let i = 0; i < 20; i++) {
        const p: Poller = new native.Poller(fd, () => p.stop());
        registry.register(p, i);
        if (i % 2 === 0) {
          p.start(READABLE);
          p.stop();
        }
      }
    })();
    for (let i = 0; i < 20 && collected < 20; i++) await collectGarbage();
    assert.equal(collected, 20);
    // Their finalizers closed the uv handles; the loop and the fd are in order.
    await collectGarbage();
    let fired = false;
    const w = new native.Poller(fd, () => {
      fired = true;
      native.eventfdRead(fd);
    });
    w.start(READABLE);
    native.eventfdWrite(fd, 1);
    await waitFor(() => fired);
    w.close();
    native.close(fd);
  });

  it('refuses a second active watcher on the same fd', () => {
    const w = watched();
    try {
      w.poller.start(READABLE);
      assertErrno(() => new native.Poller(w.fd, () => undefined), 'EEXIST', 'uv_poll_init');
    } finally {
      w.dispose();
    }
  });

  it('validates its arguments and receiver', () => {
    const fd = native.eventfd(0, EFD_NONBLOCK);
    try {
      const Ctor = native.Poller as unknown as (...args: unknown[]) => unknown;
      assertTypeError(() => Ctor(fd, () => undefined), 'ERR_CONSTRUCT_CALL_REQUIRED');
      const New = native.Poller as unknown as new (...args: unknown[]) => Poller;
      assertTypeError(() => new New(fd, 'cb'));
      assertTypeError(() => new New('1', () => undefined));
      assertRangeError(() => new New(-1, () => undefined));
      const p = new native.Poller(fd, () => undefined);
      assertRangeError(() => p.start(0));
      assertRangeError(() => p.start(16));
      assertRangeError(() => p.start(1.5));
      assertTypeError(() => (p.start as (e: unknown) => void)('1'));
      // Methods refuse foreign receivers (V8's own signature check, "Illegal invocation").
      assert.throws(() => p.start.call({}, READABLE), TypeError);
      assert.throws(() => p.close.call(new ArrayBuffer(1)), TypeError);
      assert.throws(() => p.stop.call(undefined), TypeError);
      assert.throws(() => p.ref.call(Object.create(native.Poller.prototype as object)), TypeError);
      p.close();
    } finally {
      native.close(fd);
    }
    assertErrno(() => new native.Poller(999999, () => undefined), 'EBADF', 'uv_poll_init');
    const file = native.memfdCreate('not-pollable', 0, false);
    try {
      assertErrno(() => new native.Poller(file, () => undefined), 'EPERM', 'uv_poll_init');
    } finally {
      native.close(file);
    }
  });
});

describe('Poller in child processes and workers', () => {
  checkLeaks();

  const watchScript = (extra: string): string => `
    const fd = native.eventfd(0, 0);
    const p = new native.Poller(fd, () => {});
    p.start(READABLE);
    ${extra}
    console.log('armed');
  `;

  it('an unref()ed poller lets the process exit; a ref()ed one keeps it alive', async () => {
    // Generous bounds: a child's start-up alone can take seconds on busy cores.
    const free = runChild(watchScript('p.unref();'), { timeoutMs: 60_000 });
    assert.equal(free.status, 0, free.stderr);
    assert.equal(free.stdout.trim(), 'armed');

    // Still alive well after it armed its poller (timed from 'armed', not from the spawn).
    const held = spawn(process.execPath, ['--input-type=module', '-e', childCode(watchScript('p.unref(); p.ref();'))], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const exited = new Promise<[number | null, NodeJS.Signals | null]>((resolve) =>
      held.once('exit', (code, signal) => {
        resolve([code, signal]);
      }),
    );
    try {
      const [line] = (await once(readline.createInterface({ input: held.stdout }), 'line')) as [string];
      assert.equal(line, 'armed');
      await new Promise((r) => setTimeout(r, 1000));
      assert.equal(held.exitCode, null, 'a ref()ed poller keeps the process alive');
    } finally {
      held.kill('SIGTERM');
    }
    assert.deepEqual(await exited, [null, 'SIGTERM']);

    const stopped = runChild(watchScript('p.stop();'), { timeoutMs: 60_000 });
    assert.equal(stopped.status, 0, 'a stopped poller does not hold the loop');
  });

  it('an exception thrown by the callback is an uncaught exception', () => {
    const crash = runChild(`
      const fd = native.eventfd(1, 0);
      const p = new native.Poller(fd, () => { throw new Error('boom from poller'); });
      p.start(READABLE);
    `);
    assert.equal(crash.status, 1, crash.stderr);
    assert.equal(crash.signal, null, 'no abort');
    assert.match(crash.stderr, /Error: boom from poller/);

    const handled = runChild(`
      const fd = native.eventfd(1, 0);
      let calls = 0;
      process.on('uncaughtException', (err) => {
        console.log('caught', err.message);
        if (calls === 2) { p.close(); native.close(fd); }
      });
      const p = new native.Poller(fd, () => {
        calls++;
        throw new Error('boom ' + calls);
      });
      p.start(READABLE);
    `);
    assert.equal(handled.status, 0, handled.stderr);
    assert.equal(handled.stdout.trim(), 'caught boom 1\ncaught boom 2');
  });

  it('a worker exiting with an active poller and a live mapping tears down cleanly', async () => {
    const maps = native.mappingCount();
    const source = `
      import { parentPort } from 'node:worker_threads';
      const { native, READABLE } = await import(${JSON.stringify(nativeModuleUrl)});
      const fd = native.eventfd(0, 0);
      const p = new native.Poller(fd, () => {});
      p.start(READABLE);
      const fd2 = native.eventfd(0, 0);
      const q = new native.Poller(fd2, () => {});
      q.start(READABLE);
      q.close();
      const m = native.memfdCreate('worker', 4096, true);
      globalThis.keep = native.mmap(m, 4096, 0, true);
      parentPort.postMessage([fd, fd2, m, native.mappingCount()]);
    `;
    const url = new URL(`data:text/javascript,${encodeURIComponent(source)}`);
    for (let i = 0; i < 3; i++) {
      const worker = new Worker(url);
      const ready = new Promise<number[]>((resolve, reject) => {
        worker.once('message', resolve);
        worker.once('error', reject);
      });
      const [fd, fd2, m, count] = (await ready) as [number, number, number, number];
      assert.equal(count, maps + 1, 'the mapping count is process-wide');
      assert.equal(await worker.terminate(), 1);
      // The worker's handles are closed now, so its fds may be closed safely.
      for (const n of [fd, fd2, m]) native.close(n);
    }
    // A worker whose poller is unref()ed ends on its own, with the handle still open.
    const natural = new Worker(
      new URL(`data:text/javascript,${encodeURIComponent(source.replace('p.start(READABLE);', 'p.start(READABLE); p.unref();'))}`),
    );
    // Listen for both before awaiting either: the worker may exit right after its message.
    const message = new Promise<number[]>((resolve) => natural.once('message', resolve));
    const exited = new Promise<number>((resolve) => natural.once('exit', resolve));
    const fds = await message;
    const exitCode = await exited;
    assert.equal(exitCode, 0);
    for (const n of fds.slice(0, 3)) native.close(n);
    // The mappings the workers left behind were released at their teardown.
    await waitFor(() => native.mappingCount() === maps);
    // The process is still alive and the addon still works here.
    const fd = native.eventfd(3, EFD_NONBLOCK);
    assert.equal(native.eventfdRead(fd), 3);
    native.close(fd);
  });
});
