// A small Socket.IO signaling backend of the kind intercomd's socketio mode
// joins: the real `socket.io` 4 server relaying the protocol of
// docs/signaling.md between one door station and answering browsers, as
// events named after the message types on one namespace. It also serves the
// answering page (web/ with answer.js, the Socket.IO transport) and the
// browser bundle of `socket.io-client` from node_modules. Used by
// call.test.mjs, which starts and restarts it.
//
//   node relay_server.mjs --listen HOST:PORT --door-token-file F --answerer-token-file F
//                         [--namespace /doorbell] [--ping-interval MS] [--ping-timeout MS]
//
// Authentication is in the Socket.IO CONNECT packet: `auth.key` must be the
// door's or the answerer's token (a wrong one is refused with a
// connect_error "invalid key"); answerers also give `auth.id`. The server
// keeps no state worth saving: after a restart the door re-announces its
// call with `resume` and the answerer's client reconnects by itself.
//
// Everything it does is printed as one JSON line per event on stdout, for
// the test to read: listening, auth_refused, connect, disconnect (with
// Socket.IO's reason), and relay (event name, call id, from, to).
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';
import { Server } from 'socket.io';

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);

function args(argv) {
  const out = {};
  for (let i = 0; i < argv.length; i += 2) {
    if (!argv[i].startsWith('--') || argv[i + 1] === undefined) throw new Error(`bad argument ${argv[i]}`);
    out[argv[i].slice(2)] = argv[i + 1];
  }
  return out;
}

const opt = args(process.argv.slice(2));
const [host, port] = opt.listen.split(/:(?=\d+$)/);
const readToken = (f) => fs.readFileSync(f, 'utf8').trim();
const doorToken = readToken(opt['door-token-file']);
const answererToken = readToken(opt['answerer-token-file']);
const namespace = opt.namespace || '/doorbell';

const log = (ev, fields = {}) => process.stdout.write(`${JSON.stringify({ t: Date.now(), ev, ...fields })}\n`);

// The page: the product's own (web/), with answer.js, the Socket.IO
// transport, loaded before app.js; and the client bundle. Files only,
// never a CDN.
const webDir = path.join(here, '..', '..', 'web');
const clientBundle = path.join(path.dirname(require.resolve('socket.io-client/package.json')), 'dist', 'socket.io.min.js');
const js = 'text/javascript; charset=utf-8';
const APP_SCRIPT = '<script type="module" src="app.js"></script>';
function answerPage() {
  const html = fs.readFileSync(path.join(webDir, 'index.html'), 'utf8');
  if (!html.includes(APP_SCRIPT)) throw new Error(`web/index.html no longer loads app.js as ${APP_SCRIPT}`);
  return html.replace(APP_SCRIPT, `<script src="/socket.io.min.js"></script>\n<script type="module" src="/answer.js"></script>\n${APP_SCRIPT}`);
}
const files = {
  '/': { body: answerPage, type: 'text/html; charset=utf-8' },
  '/answer.js': { file: path.join(here, 'answer.js'), type: js },
  '/socket.io.min.js': { file: clientBundle, type: js },
  '/style.css': { file: path.join(webDir, 'style.css'), type: 'text/css; charset=utf-8' },
};
for (const m of ['app.js', 'call.js', 'signal.js', 'media.js']) files[`/${m}`] = { file: path.join(webDir, m), type: js };
answerPage(); // fails at start, not at the first request
const server = http.createServer((req, res) => {
  const f = files[new URL(req.url, 'http://x').pathname];
  if (!f || req.method !== 'GET') {
    res.writeHead(404).end();
    return;
  }
  res.writeHead(200, { 'content-type': f.type, 'cache-control': 'no-store' });
  if (f.body) res.end(f.body());
  else fs.createReadStream(f.file).pipe(res);
});

const io = new Server(server, {
  serveClient: false,
  pingInterval: Number(opt['ping-interval'] || 1000),
  pingTimeout: Number(opt['ping-timeout'] || 800),
});
const ns = io.of(namespace);

let door = null; // the door station's socket
const answerers = new Map(); // id -> socket
const calls = new Map(); // call_id -> { group, answerer: id|null }

ns.use((socket, next) => {
  const auth = socket.handshake.auth || {};
  if (auth.key === doorToken) {
    socket.data = { role: 'door', id: 'door-1' };
    return next();
  }
  if (auth.key === answererToken && typeof auth.id === 'string' && auth.id) {
    socket.data = { role: 'answerer', id: auth.id };
    return next();
  }
  log('auth_refused', { transport: socket.conn.transport.name });
  return next(new Error('invalid key'));
});

function toDoor(event, msg, from) {
  if (!door) {
    log('undeliverable', { event, call_id: msg.call_id, from });
    return;
  }
  door.emit(event, msg);
  log('relay', { event, call_id: msg.call_id, from, to: 'door-1' });
}

function toAnswerer(id, event, msg, from) {
  const s = answerers.get(id);
  if (!s) {
    log('undeliverable', { event, call_id: msg.call_id, from, to: id });
    return;
  }
  s.emit(event, msg);
  log('relay', { event, call_id: msg.call_id, from, to: id });
}

ns.on('connection', (socket) => {
  const { role, id } = socket.data;
  log('connect', { role, id, sid: socket.id, transport: socket.conn.transport.name });
  socket.on('disconnect', (reason) => {
    log('disconnect', { role, id, reason });
    if (role === 'door' && door === socket) door = null;
    if (role === 'answerer' && answerers.get(id) === socket) answerers.delete(id);
  });
  if (role === 'door') {
    door = socket;
    socket.on('ring', (m) => {
      calls.set(m.call_id, { group: m.group, answerer: null });
      log('ring', { call_id: m.call_id, group: m.group, answerers: answerers.size });
      for (const [aid] of answerers) toAnswerer(aid, 'ring', { call_id: m.call_id, group: m.group, door: { id, name: 'Front door' } }, id);
      socket.emit('ringing', { call_id: m.call_id, answerers: answerers.size });
    });
    socket.on('resume', (m) => {
      const known = calls.has(m.call_id);
      calls.set(m.call_id, { group: m.group, answerer: m.answerer ?? null });
      log('resume', { call_id: m.call_id, answerer: m.answerer ?? null, known });
      socket.emit('resumed', { call_id: m.call_id });
    });
    for (const event of ['offer', 'candidate', 'hangup', 'cancel', 'error']) {
      socket.on(event, (m) => {
        const call = calls.get(m && m.call_id);
        if (!call) {
          log('unknown_call', { event, call_id: m && m.call_id, from: id });
          return;
        }
        if (event === 'cancel') {
          for (const [aid] of answerers) toAnswerer(aid, event, m, id);
        } else if (call.answerer) {
          toAnswerer(call.answerer, event, m, id);
        }
        if (event === 'hangup' || event === 'cancel') calls.delete(m.call_id);
      });
    }
  } else {
    answerers.set(id, socket);
    socket.on('accept', (m) => {
      const call = calls.get(m && m.call_id);
      if (!call || call.answerer) {
        socket.emit('taken', { call_id: m && m.call_id, by: call ? call.answerer : '' });
        return;
      }
      call.answerer = id;
      toDoor('accepted', { call_id: m.call_id, answerer: { id, name: id } }, id);
    });
    for (const event of ['answer', 'candidate', 'hangup', 'decline', 'error']) {
      socket.on(event, (m) => {
        const call = calls.get(m && m.call_id);
        if (!call || (event !== 'decline' && call.answerer !== id)) {
          log('unknown_call', { event, call_id: m && m.call_id, from: id });
          return;
        }
        toDoor(event === 'decline' ? 'declined' : event, m, id);
        if (event === 'hangup') calls.delete(m.call_id);
      });
    }
  }
});

server.listen(Number(port), host, () => log('listening', { address: `${host}:${port}`, namespace }));
for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => {
    io.close();
    server.close(() => process.exit(0));
    setTimeout(() => process.exit(0), 1000).unref();
  });
}
