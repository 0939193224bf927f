// The test push service (tests/push/push_service.py: py_vapid checks the
// VAPID token, http_ece decrypts) on a test namespace's loopback, where
// the station's hub reaches it over http://127.0.0.1.
import fs from 'node:fs';
import path from 'node:path';
import { REPO } from './daemon.mjs';
import { RawClient } from './rawclient.mjs';
import { waitFor } from './util.mjs';

export const PUSH_PYTHON = path.join(REPO, 'tests/push/.venv/bin/python');

/** Skip reason when the push service's venv is missing, else false. */
export function pushServiceSkipReason() {
  return fs.existsSync(PUSH_PYTHON) ? false : `${PUSH_PYTHON} is missing (run scripts/setup.sh)`;
}

export class PushService {
  constructor(child, info, logFile) {
    this.child = child;
    this.origin = info.origin;
    this.keys = { p256dh: info.p256dh, auth: info.auth };
    this.logFile = logFile;
  }

  /** Start it inside `env`'s namespace on 127.0.0.1. */
  static async start(env) {
    const logFile = env.file('push-records.jsonl');
    const child = env.spawn('push-service', PUSH_PYTHON,
      [path.join(REPO, 'tests/push/push_service.py'), '--listen', '127.0.0.1:0', '--log-file', logFile]);
    const line = await waitFor(() => {
      if (child.exitInfo) throw new Error(`push service exited: ${child.lines.join('\n')}`);
      return child.lines.find((l) => l.startsWith('{'));
    }, { timeout: 20000, interval: 50, message: 'the push service to start' });
    return new PushService(child, JSON.parse(line), logFile);
  }

  /** A subscription (PushSubscription.toJSON()) whose endpoint answers as `behaviour` says. */
  subscription(name, behaviour = '201') {
    return { endpoint: `${this.origin}/push/${behaviour}/${name}`, keys: { ...this.keys } };
  }

  /** Every push taken, in order, with its decrypted payload as `json`. */
  records() {
    let text = '';
    try { text = fs.readFileSync(this.logFile, 'utf8'); } catch { return []; }
    return text.split('\n').filter(Boolean).map((l) => {
      const r = JSON.parse(l);
      try { r.json = JSON.parse(r.plaintext); } catch { r.json = null; }
      return r;
    });
  }

  /** The pushes to the endpoint named `name`. */
  recordsFor(name) {
    return this.records().filter((r) => r.path.endsWith(`/${name}`));
  }
}

/**
 * Subscribe `sub` for the answerer with `token` over a raw WebSocket (a
 * headless browser in a namespace has no push service of its own), then
 * close that connection: the answerer's page may connect after it.
 */
export async function subscribeRaw(hubSock, hubOrigin, token, sub) {
  const ws = await RawClient.connect(hubSock, `${hubOrigin.replace(/^http/, 'ws')}/ws`, 'push-subscriber');
  try {
    const welcome = await ws.hello('answerer', token);
    if (welcome.type !== 'welcome') throw new Error(`hello refused: ${JSON.stringify(welcome)}`);
    if (!welcome.push || !welcome.push.vapid_public_key) throw new Error(`welcome offers no push: ${JSON.stringify(welcome)}`);
    const from = ws.messages.length;
    ws.send({ type: 'push_subscribe', subscription: sub });
    const reply = await ws.next((m) => m.type === 'push_subscribed' || m.type === 'error', { from, what: 'push_subscribed' });
    if (reply.type !== 'push_subscribed') throw new Error(`push_subscribe: ${JSON.stringify(reply)}`);
    return welcome.push.vapid_public_key;
  } finally {
    ws.close();
  }
}
