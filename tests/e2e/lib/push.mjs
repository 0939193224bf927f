// The test push service (tests/push/push_service.py: py_vapid checks the
// hub's VAPID token, http_ece decrypts its payload) running on the
// namespace's loopback, where the hub may push over plain http.
import fs from 'node:fs';
import path from 'node:path';
import { REPO } from './daemon.mjs';
import { waitFor } from './util.mjs';

export const PUSH_PYTHON = path.join(REPO, 'tests/push/.venv/bin/python');
const SERVICE = path.join(REPO, 'tests/push/push_service.py');

/** Skip reason when the push service's venv is missing, else false. */
export function pushServiceSkipReason() {
  return fs.existsSync(PUSH_PYTHON) ? false : `${PUSH_PYTHON} is missing (scripts/setup.sh makes it)`;
}

export class PushService {
  constructor(child, logFile, start) {
    this.child = child;
    this.logFile = logFile;
    this.origin = start.origin;
    this.keys = { p256dh: start.p256dh, auth: start.auth };
  }

  /** Start it inside `env`'s namespace on 127.0.0.1:`port`. */
  static async start(env, { port = 8090 } = {}) {
    const logFile = env.file('push-service.jsonl');
    const child = env.spawn('push-service', PUSH_PYTHON, [SERVICE, '--listen', `127.0.0.1:${port}`, '--log-file', logFile]);
    const line = await waitFor(() => {
      if (child.exitInfo) throw new Error(`push service exited ${JSON.stringify(child.exitInfo)}: ${child.lines.join('\n')}`);
      return child.lines.find((l) => l.startsWith('{'));
    }, { timeout: 20000, interval: 50, message: 'the push service to start' });
    return new PushService(child, logFile, JSON.parse(line));
  }

  /** A subscription (PushSubscription.toJSON() shape) whose endpoint answers 201. */
  subscription(name) {
    return { endpoint: `${this.origin}/push/201/${name}`, keys: { ...this.keys } };
  }

  /** Every push taken so far, in order. */
  records() {
    let text = '';
    try { text = fs.readFileSync(this.logFile, 'utf8'); } catch { return []; }
    return text.split('\n').filter(Boolean).map((l) => JSON.parse(l));
  }

  /** Wait for a decrypted push whose payload matches `pred`; returns { record, payload }. */
  async next(pred, { timeout = 10000, what = 'a push' } = {}) {
    try {
      return await waitFor(() => {
        for (const r of this.records()) {
          if (!r.plaintext) continue;
          const payload = JSON.parse(r.plaintext);
          if (pred(payload, r)) return { record: r, payload };
        }
        return null;
      }, { timeout, interval: 50, message: `the push service to take ${what}` });
    } catch (err) {
      err.message += `; pushes so far: ${JSON.stringify(this.records().map((r) => ({ path: r.path, status: r.status_returned, error: r.error, vapid: r.vapid.error, plaintext: r.plaintext })))}`;
      throw err;
    }
  }
}
