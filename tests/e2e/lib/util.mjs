// Small utilities shared by the end-to-end tests.
import { execFileSync } from 'node:child_process';

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Poll `fn` until it returns a truthy value (returned) or the timeout expires
 * (throws with `message` and the last value seen). Bounded in time and count.
 */
export async function waitFor(fn, { timeout = 10000, interval = 100, message = 'condition' } = {}) {
  const deadline = Date.now() + timeout;
  const maxIterations = Math.ceil(timeout / Math.max(1, interval)) + 2;
  let last;
  let lastError;
  for (let i = 0; i < maxIterations; i++) {
    try {
      last = await fn();
      lastError = undefined;
      if (last) return last;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() >= deadline) break;
    await sleep(Math.min(interval, Math.max(0, deadline - Date.now())));
  }
  const detail = lastError ? `last error: ${lastError.message}` : `last value: ${JSON.stringify(last)}`;
  throw new Error(`timed out after ${timeout} ms waiting for ${message} (${detail})`);
}

/** Run `fn` with a hard time limit. */
export async function withTimeout(promise, ms, what) {
  let timer;
  try {
    return await Promise.race([
      promise,
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${what}: no result within ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

export function median(values) {
  const v = values.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return null;
  const mid = Math.floor(v.length / 2);
  return v.length % 2 ? v[mid] : (v[mid - 1] + v[mid]) / 2;
}

export function randomToken(bytes = 24) {
  const buf = new Uint8Array(bytes);
  crypto.getRandomValues(buf);
  return Buffer.from(buf).toString('base64url');
}

/** Synchronous command, for teardown paths that must not be async. */
export function runSync(cmd, args, { ignoreErrors = true, timeout = 10000 } = {}) {
  try {
    return execFileSync(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], timeout }).toString();
  } catch (err) {
    if (!ignoreErrors) throw err;
    return '';
  }
}

/** True when this process can manage network namespaces (root with iproute2). */
export function canUseNetns() {
  if (typeof process.getuid === 'function' && process.getuid() !== 0) return false;
  try {
    execFileSync('ip', ['netns', 'list'], { stdio: 'ignore', timeout: 5000 });
    return true;
  } catch {
    return false;
  }
}
