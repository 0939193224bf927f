// A private network namespace per test: a veth pair with both ends inside,
// loopback up, no route out. Everything the test starts (daemon, Chromium,
// relays) runs inside it through `ip netns exec`.
//
// The test process itself stays outside. To reach TCP services inside, a
// forwarder started in the namespace listens on Unix sockets (filesystem
// sockets are not namespaced) and connects to the given host:port inside.
import { spawn, execFile } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import tls from 'node:tls';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { onCleanup } from './cleanup.mjs';
import { runSync, sleep, waitFor } from './util.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
let counter = 0;

function execAsync(cmd, args, timeout = 15000) {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { timeout }, (err, stdout, stderr) => {
      if (err) {
        err.message += `\n${stderr}`;
        reject(err);
      } else {
        resolve(stdout);
      }
    });
  });
}

export class Netns {
  constructor(n) {
    this.n = n;
    // E2E_NETNS_PREFIX / E2E_NET_PREFIX keep parallel runs apart (defaults:
    // ic-e2e, 10.99).
    const prefix = process.env.E2E_NETNS_PREFIX || 'ic-e2e';
    const net = process.env.E2E_NET_PREFIX || '10.99';
    this.name = `${prefix}-${process.pid}-${n}`;
    const subnet = 10 + (n % 240);
    this.addrA = `${net}.${subnet}.1`;
    this.addrB = `${net}.${subnet}.2`;
    this.vethA = `ic${n}a`;
    this.vethB = `ic${n}b`;
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), `${this.name}-`));
    this.procs = new Set();
    this.destroyed = false;
  }

  /** Create the namespace and its links. Registers teardown. */
  static async create() {
    const ns = new Netns(counter++);
    // Stale namespace with the same name (pid reuse): remove it first.
    runSync('ip', ['netns', 'del', ns.name]);
    ns.cancelCleanup = onCleanup(`netns ${ns.name}`, () => ns.destroySync());
    const ip = (...args) => execAsync('ip', args);
    await ip('netns', 'add', ns.name);
    const inNs = (...args) => ip('netns', 'exec', ns.name, 'ip', ...args);
    await inNs('link', 'set', 'lo', 'up');
    await inNs('link', 'add', ns.vethA, 'type', 'veth', 'peer', 'name', ns.vethB);
    await inNs('addr', 'add', `${ns.addrA}/24`, 'dev', ns.vethA);
    await inNs('addr', 'add', `${ns.addrB}/24`, 'dev', ns.vethB);
    await inNs('link', 'set', ns.vethA, 'up');
    await inNs('link', 'set', ns.vethB, 'up');
    // A LAN host has a multicast route (mDNS uses 224.0.0.251); without one,
    // opening a multicast socket fails with ENODEV. The route stays inside.
    await inNs('route', 'add', '224.0.0.0/4', 'dev', ns.vethA);
    return ns;
  }

  /**
   * Start a process inside the namespace. Output goes to `logFile` (appended)
   * and to the in-memory `lines` array. Returns the ChildProcess with helpers.
   */
  spawn(cmd, args, { logFile, env = {}, name = path.basename(cmd), onLine } = {}) {
    const child = spawn('ip', ['netns', 'exec', this.name, cmd, ...args], {
      env: { ...process.env, NO_COLOR: '1', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    });
    child.label = name;
    child.lines = [];
    child.exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
    child.exitInfo = null;
    child.once('exit', (code, signal) => {
      child.exitInfo = { code, signal };
      this.procs.delete(child);
    });
    const out = logFile ? fs.createWriteStream(logFile, { flags: 'a' }) : null;
    child.logFile = logFile;
    const feed = (stream) => {
      let buf = '';
      stream.on('data', (chunk) => {
        if (out) out.write(chunk);
        buf += chunk.toString();
        let i;
        while ((i = buf.indexOf('\n')) >= 0) {
          const line = stripAnsi(buf.slice(0, i));
          buf = buf.slice(i + 1);
          child.lines.push(line);
          if (onLine) onLine(line);
        }
      });
      stream.on('end', () => {
        if (buf) {
          child.lines.push(stripAnsi(buf));
          buf = '';
        }
      });
    };
    feed(child.stdout);
    feed(child.stderr);
    child.once('exit', () => setTimeout(() => out && out.end(), 50));
    this.procs.add(child);
    return child;
  }

  /** Run a command inside the namespace and return its stdout. */
  exec(cmd, args, timeout = 15000) {
    return execAsync('ip', ['netns', 'exec', this.name, cmd, ...args], timeout);
  }

  /** Kill a process started with spawn(): SIGTERM, then SIGKILL after graceMs. */
  async kill(child, { signal = 'SIGTERM', graceMs = 3000 } = {}) {
    if (!child || child.exitInfo) return child && child.exitInfo;
    try { process.kill(-child.pid, signal); } catch { /* gone */ }
    const res = await Promise.race([child.exited, sleep(graceMs).then(() => null)]);
    if (res) return res;
    try { process.kill(-child.pid, 'SIGKILL'); } catch { /* gone */ }
    return Promise.race([child.exited, sleep(2000).then(() => ({ code: null, signal: 'SIGKILL?' }))]);
  }

  /** Pids of every process inside the namespace. */
  pids() {
    return runSync('ip', ['netns', 'pids', this.name]).split(/\s+/).filter(Boolean).map(Number);
  }

  /**
   * Forward Unix sockets (outside reachable) to TCP targets inside.
   * `targets`: { key: 'host:port' }. Returns { key: socketPath }.
   */
  async forward(targets) {
    const args = [];
    const paths = {};
    for (const [key, target] of Object.entries(targets)) {
      const p = path.join(this.dir, `fwd-${key}.sock`);
      try { fs.unlinkSync(p); } catch { /* none */ }
      paths[key] = p;
      args.push(`${p}=${target}`);
    }
    const child = this.spawn(process.execPath, [path.join(here, 'nsforward.mjs'), ...args], {
      name: 'nsforward',
      logFile: path.join(this.dir, 'nsforward.log'),
    });
    await waitFor(() => Object.values(paths).every((p) => fs.existsSync(p)) || child.exitInfo, {
      timeout: 10000, interval: 50, message: 'the namespace forwarder to listen',
    });
    if (child.exitInfo) throw new Error(`forwarder exited: ${child.lines.join('\n')}`);
    return paths;
  }

  destroySync() {
    if (this.destroyed) return;
    this.destroyed = true;
    for (const child of this.procs) {
      try { process.kill(-child.pid, 'SIGKILL'); } catch { /* gone */ }
    }
    // Anything else still inside (Chromium helpers): only processes in our
    // own namespace, which this test started.
    for (let i = 0; i < 3; i++) {
      const pids = this.pids();
      if (pids.length === 0) break;
      for (const pid of pids) {
        try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
      }
      runSync('sleep', ['0.2']);
    }
    runSync('ip', ['netns', 'del', this.name]);
  }

  async destroy() {
    for (const child of [...this.procs]) await this.kill(child, { graceMs: 2000 });
    if (this.cancelCleanup) this.cancelCleanup();
    else this.destroySync();
  }
}

export function stripAnsi(s) {
  // eslint-disable-next-line no-control-regex
  return s.replace(/\x1b\[[0-9;]*[A-Za-z]/g, '');
}

/** HTTP request through a Unix socket path (see Netns.forward). */
export function httpRequest(socketPath, method, urlPath, { body, timeout = 5000, headers = {} } = {}) {
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath, method, path: urlPath, headers: { host: 'localhost', ...headers }, timeout }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks).toString() }));
    });
    req.on('timeout', () => req.destroy(new Error(`${method} ${urlPath}: timeout after ${timeout} ms`)));
    req.on('error', reject);
    if (body !== undefined) req.write(body);
    req.end();
  });
}

/** A net.Socket to a Unix socket path, for clients that accept createConnection. */
export function unixConnect(socketPath) {
  return net.connect(socketPath);
}

/**
 * TLS handshake through a Unix socket path (see Netns.forward), accepting
 * any certificate: returns the certificate served, as node's
 * getPeerCertificate() (fingerprint256, raw DER, subjectaltname…), with
 * `protocol` and `alpn` of the session.
 */
export function tlsPeerCertificate(socketPath, { timeout = 5000, alpn = ['http/1.1'] } = {}) {
  return new Promise((resolve, reject) => {
    const sock = tls.connect({ socket: net.connect(socketPath), rejectUnauthorized: false, ALPNProtocols: alpn });
    const timer = setTimeout(() => sock.destroy(new Error(`TLS handshake: timeout after ${timeout} ms`)), timeout);
    sock.once('secureConnect', () => {
      clearTimeout(timer);
      const cert = sock.getPeerCertificate(true);
      const out = { ...cert, protocol: sock.getProtocol(), alpn: sock.alpnProtocol };
      sock.end();
      resolve(out);
    });
    sock.once('error', (err) => { clearTimeout(timer); reject(err); });
  });
}
