// A raw WebSocket client (npm ws) reaching the hub inside the namespace
// through a Unix-socket forwarder. Collects every message for assertions.
import net from 'node:net';
import WebSocket from 'ws';
import { waitFor } from './util.mjs';

export class RawClient {
  constructor(ws, label) {
    this.ws = ws;
    this.label = label;
    this.messages = [];
    this.closeInfo = null;
    ws.on('message', (data, isBinary) => {
      const text = data.toString();
      let msg;
      try { msg = JSON.parse(text); } catch { msg = { unparsable: text, binary: isBinary }; }
      this.messages.push(msg);
    });
    this.closed = new Promise((resolve) => ws.once('close', (code, reason) => {
      this.closeInfo = { code, reason: reason.toString() };
      resolve(this.closeInfo);
    }));
    ws.on('error', (err) => { this.error = err; });
  }

  static connect(sock, url, label = 'raw') {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url, {
        createConnection: () => net.connect(sock),
        handshakeTimeout: 5000,
        maxPayload: 1 << 20,
      });
      const client = new RawClient(ws, label);
      const t = setTimeout(() => { ws.terminate(); reject(new Error(`${label}: connect timeout`)); }, 6000);
      ws.once('open', () => { clearTimeout(t); resolve(client); });
      ws.once('error', (err) => { clearTimeout(t); reject(err); });
    });
  }

  send(msg) {
    this.ws.send(typeof msg === 'string' || Buffer.isBuffer(msg) ? msg : JSON.stringify(msg));
  }

  sendBinary(buf) {
    this.ws.send(buf, { binary: true });
  }

  /** Wait for the next message (after index `from`) matching `pred`. */
  async next(pred, { from = 0, timeout = 5000, what = 'a message' } = {}) {
    try {
      return await waitFor(() => this.messages.slice(from).find(pred), { timeout, interval: 20, message: `${this.label}: ${what}` });
    } catch (err) {
      err.message += `; received: ${JSON.stringify(this.messages.slice(from)).slice(0, 1500)}; close: ${JSON.stringify(this.closeInfo)}`;
      throw err;
    }
  }

  /** Send `msg` and wait for an error reply; returns it. */
  async expectError(msg, { timeout = 5000, binary = false } = {}) {
    const from = this.messages.length;
    if (binary) this.sendBinary(msg); else this.send(msg);
    return this.next((m) => m.type === 'error', { from, timeout, what: `an error reply to ${describe(msg)}` });
  }

  async hello(role, token, v = 1) {
    const from = this.messages.length;
    this.send({ type: 'hello', v, role, token });
    return this.next((m) => m.type === 'welcome' || m.type === 'error', { from, what: 'welcome or error after hello' });
  }

  async waitClose(timeout = 5000) {
    return Promise.race([this.closed, new Promise((r) => setTimeout(() => r(null), timeout))]);
  }

  close() {
    try { this.ws.terminate(); } catch { /* ignore */ }
  }
}

function describe(msg) {
  if (Buffer.isBuffer(msg)) return `<${msg.length} binary bytes>`;
  const s = typeof msg === 'string' ? msg : JSON.stringify(msg);
  return s.length > 80 ? `${s.slice(0, 80)}… (${s.length} bytes)` : s;
}
