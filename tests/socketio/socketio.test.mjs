// intercomd's Socket.IO v4 client mode against a real socket.io server
// (npm socket.io 4.x), on loopback: WebSocket-only connection with auth,
// a custom namespace, configurable event names, server pings answered,
// auth refusal retried with backoff, reconnection after a server restart.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync, rmSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer } from 'node:http';
import { Server } from 'socket.io';

const BIN = process.env.INTERCOMD_BIN || new URL('../../target/debug/intercomd', import.meta.url).pathname;
const TOKEN = 'door-token-0123456789abcdef';

function sleep(ms) { return new Promise((r) => setTimeout(r, ms)); }

async function waitFor(pred, { timeout = 10000, what = 'condition' } = {}) {
  const end = Date.now() + timeout;
  while (Date.now() < end) {
    const v = await pred();
    if (v) return v;
    await sleep(50);
  }
  throw new Error(`timed out waiting for ${what}`);
}

/// A socket.io server on an ephemeral loopback port. `onDoor(socket)` gets
/// every authenticated connection on the namespace.
async function startServer({ port = 0, onDoor, pingInterval = 600, pingTimeout = 400 } = {}) {
  const http = createServer();
  // No polling transport: the door talks WebSocket directly.
  const io = new Server(http, { transports: ['websocket'], pingInterval, pingTimeout });
  const log = [];
  const ns = io.of('/doorbell');
  ns.use((socket, next) => {
    const tok = socket.handshake.auth && socket.handshake.auth.key;
    log.push({ kind: 'auth', token: tok, query: socket.handshake.query });
    if (tok === TOKEN) return next();
    const err = new Error('bad door key');
    return next(err);
  });
  ns.on('connection', (socket) => {
    log.push({ kind: 'connect', id: socket.id });
    socket.onAny((event, data) => log.push({ kind: 'event', event, data }));
    socket.on('disconnect', (reason) => log.push({ kind: 'disconnect', reason }));
    if (onDoor) onDoor(socket);
  });
  await new Promise((r) => http.listen(port, '127.0.0.1', r));
  const addr = http.address();
  return {
    port: addr.port,
    log,
    io,
    async close() {
      io.close();
      await new Promise((r) => http.close(() => r()));
    },
  };
}

function startDoor(dir, port, { token = TOKEN } = {}) {
  writeFileSync(join(dir, 'token'), token + '\n', { mode: 0o600 });
  chmodSync(join(dir, 'token'), 0o600);
  writeFileSync(join(dir, 'door.toml'), `
[station]
id = "door-7"
name = "Garden gate"
[signaling]
mode = "socketio"
url = "ws://127.0.0.1:${port}"
token_file = "${join(dir, 'token')}"
reconnect_initial_ms = 300
reconnect_max_ms = 1000
[signaling.socketio]
namespace = "/doorbell"
auth_field = "key"
[signaling.socketio.events]
ring = "door:ring"
ringing = "door:ringing"
[hardware.sim]
control_listen = "127.0.0.1:0"
stdin = false
[log]
target = "stderr"
level = "info,webrtc=warn,rtc=warn"
`);
  const child = spawn(BIN, ['run', '--config', join(dir, 'door.toml')], { stdio: ['ignore', 'ignore', 'pipe'] });
  const out = { text: '' };
  child.stderr.on('data', (d) => { out.text += d.toString(); });
  return { child, out };
}

async function stop(child) {
  if (child.exitCode !== null) return child.exitCode;
  child.kill('SIGTERM');
  return await new Promise((r) => child.on('exit', (code) => r(code)));
}

test('door station joins a socket.io v4 server and speaks through mapped events', { timeout: 60000 }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'intercomd-sio-'));
  let rings = 0;
  const server = await startServer({
    onDoor(socket) {
      socket.on('door:ring', (msg) => {
        rings += 1;
        // Nobody online: the door must end the call by itself.
        socket.emit('door:ringing', { call_id: msg.call_id, answerers: 0 });
      });
    },
  });
  const { child, out } = startDoor(dir, server.port);
  t.after(async () => { await stop(child); await server.close(); rmSync(dir, { recursive: true, force: true }); });

  await waitFor(() => server.log.some((e) => e.kind === 'connect'), { what: 'the door to connect' });
  const auth = server.log.find((e) => e.kind === 'auth');
  assert.equal(auth.token, TOKEN, 'the token travels in the CONNECT auth object under the configured key');
  assert.equal(auth.query.EIO, '4');
  assert.equal(auth.query.transport, 'websocket', 'WebSocket directly, no polling first');
  await waitFor(() => /Socket connected.*protocol="?socket\.io/.test(out.text), { what: 'the milestone log line' });

  // Several server ping intervals pass: the door answers pings, so the
  // server (pingTimeout 400 ms) keeps it.
  await sleep(3000);
  assert.ok(!server.log.some((e) => e.kind === 'disconnect'), `no disconnect: ${JSON.stringify(server.log)}`);

  // Press the button through the door's simulated panel.
  const m = out.text.match(/panel=Some\(([0-9.:]+)\)/);
  assert.ok(m, `panel address in the log:\n${out.text}`);
  const r = await fetch(`http://${m[1]}/press`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
  assert.equal(r.status, 200);
  await waitFor(() => rings === 1, { what: 'the ring event under its mapped name' });
  const ring = server.log.find((e) => e.kind === 'event' && e.event === 'door:ring');
  assert.equal(ring.data.group, 'residents');
  assert.match(ring.data.call_id, /^c-[0-9a-f]+-[0-9a-f]+$/);
  await waitFor(async () => (await (await fetch(`http://${m[1]}/state`)).json()).call.state === 'ended',
    { what: 'the door to end the unanswered call' });
  assert.match(out.text, /call ended.*no answerer online/);
  // Unmapped types keep their own names.
  assert.ok(!server.log.some((e) => e.kind === 'event' && e.event === 'ring'));

  assert.equal(await stop(child), 0, 'clean exit on SIGTERM');
});

test('refused auth is logged and retried; a restarted server is rejoined', { timeout: 60000 }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'intercomd-sio-'));
  let server = await startServer();
  const port = server.port;
  const { child, out } = startDoor(dir, port, { token: 'wrong-token-value-000' });
  t.after(async () => { await stop(child); await server.close(); rmSync(dir, { recursive: true, force: true }); });

  await waitFor(() => server.log.filter((e) => e.kind === 'auth').length >= 2, { what: 'a retry after refusal' });
  assert.ok(!server.log.some((e) => e.kind === 'connect'));
  await waitFor(() => /bad door key/.test(out.text), { what: 'the server\'s refusal in the log' });
  assert.ok(!out.text.includes('wrong-token-value-000'), 'the token never reaches the log');
  const delays = [...out.text.matchAll(/delay_ms=(\d+)/g)].map((x) => Number(x[1]));
  assert.ok(delays.length >= 1 && delays.every((d) => d >= 240 && d <= 1200), `backoff delays ${delays}`);
  await stop(child);

  // A good door; then the server restarts on the same port.
  const good = startDoor(dir, port);
  t.after(async () => { await stop(good.child); });
  await waitFor(() => server.log.some((e) => e.kind === 'connect'), { what: 'the door to connect' });
  await server.close();
  server = await startServer({ port });
  await waitFor(() => server.log.some((e) => e.kind === 'connect'), { timeout: 15000, what: 'the door to rejoin the restarted server' });
  assert.match(good.out.text, /signaling connection lost; reconnect in \d+ ms/);
  assert.equal(await stop(good.child), 0);
});
