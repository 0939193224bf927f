// A deliberately small hub speaking the routing part of docs/signaling.md:
// hello/welcome, ring/ringing/taken, accept/accepted, relaying offer, answer,
// candidate and hangup between the two parties, ping/pong. It serves web/ at
// /, /app.js and its modules, /style.css. It exists so the harness and the answering page can
// be exercised without the daemon (plumbing.test.mjs); it is not a reference
// implementation of the hub's error handling.
//
// Usage: node mini_hub.mjs HOST:PORT CONFIG.json WEB_DIR
//   CONFIG.json: {"doors":[{"id","name","token"}],"answerers":[{"id","name","token","groups":[]}]}
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { WebSocketServer } from 'ws';

const [listen, configFile, webDir] = process.argv.slice(2);
const config = JSON.parse(fs.readFileSync(configFile, 'utf8'));
const colon = listen.lastIndexOf(':');
const host = listen.slice(0, colon);
const port = Number(listen.slice(colon + 1));

const files = {
  '/': ['index.html', 'text/html; charset=utf-8'],
  '/index.html': ['index.html', 'text/html; charset=utf-8'],
  '/app.js': ['app.js', 'text/javascript; charset=utf-8'],
  '/call.js': ['call.js', 'text/javascript; charset=utf-8'],
  '/signal.js': ['signal.js', 'text/javascript; charset=utf-8'],
  '/media.js': ['media.js', 'text/javascript; charset=utf-8'],
  '/style.css': ['style.css', 'text/css; charset=utf-8'],
};

const server = http.createServer((req, res) => {
  const entry = files[new URL(req.url, 'http://x').pathname];
  if (!entry) {
    res.writeHead(404).end('not found');
    return;
  }
  res.writeHead(200, { 'content-type': entry[1], 'cache-control': 'no-store' });
  res.end(fs.readFileSync(path.join(webDir, entry[0])));
});

const wss = new WebSocketServer({ server, path: '/ws', maxPayload: 65536 });
const clients = new Map(); // id -> { ws, role, info }
const calls = new Map(); // call_id -> { door, group, rung:Set, answerer }

function log(...args) {
  process.stderr.write(`${new Date().toISOString()} mini_hub: ${args.join(' ')}\n`);
}

function sendTo(id, msg) {
  const c = clients.get(id);
  if (c && c.ws.readyState === 1) c.ws.send(JSON.stringify(msg));
}

wss.on('connection', (ws) => {
  let me = null;
  ws.on('message', (data, isBinary) => {
    if (isBinary) return;
    let msg;
    try { msg = JSON.parse(data.toString()); } catch { return; }
    if (msg.type === 'ping') { ws.send('{"type":"pong"}'); return; }
    if (!me) {
      if (msg.type !== 'hello') return;
      const list = msg.role === 'door' ? config.doors : config.answerers;
      const info = list.find((x) => x.token === msg.token);
      if (!info || msg.v !== 1) {
        ws.send(JSON.stringify({ type: 'error', code: info ? 'unsupported_version' : 'auth_failed', message: 'refused' }));
        ws.close(1008);
        return;
      }
      const old = clients.get(info.id);
      if (old) old.ws.close(4000);
      me = { ws, role: msg.role, info };
      clients.set(info.id, me);
      ws.send(JSON.stringify({ type: 'welcome', v: 1, session: `s-${Date.now()}`, id: info.id, name: info.name, groups: info.groups || [], ice_servers: [] }));
      log(`hello ${msg.role} ${info.id}`);
      return;
    }
    const call = calls.get(msg.call_id);
    switch (msg.type) {
      case 'ring': {
        if (me.role !== 'door' || calls.has(msg.call_id)) return;
        const rung = new Set();
        for (const [id, c] of clients) {
          if (c.role === 'answerer' && (c.info.groups || []).includes(msg.group)) {
            rung.add(id);
            sendTo(id, { type: 'ring', call_id: msg.call_id, group: msg.group, door: { id: me.info.id, name: me.info.name } });
          }
        }
        calls.set(msg.call_id, { door: me.info.id, group: msg.group, rung, answerer: null });
        ws.send(JSON.stringify({ type: 'ringing', call_id: msg.call_id, answerers: rung.size }));
        return;
      }
      case 'accept': {
        if (!call) return;
        if (call.answerer) { ws.send(JSON.stringify({ type: 'taken', call_id: msg.call_id, by: clients.get(call.answerer)?.info.name })); return; }
        call.answerer = me.info.id;
        sendTo(call.door, { type: 'accepted', call_id: msg.call_id, answerer: { id: me.info.id, name: me.info.name } });
        for (const id of call.rung) if (id !== me.info.id) sendTo(id, { type: 'taken', call_id: msg.call_id, by: me.info.name });
        return;
      }
      case 'decline':
        if (call) call.rung.delete(me.info.id);
        return;
      case 'cancel':
        if (call) { for (const id of call.rung) sendTo(id, msg); calls.delete(msg.call_id); }
        return;
      case 'offer': case 'answer': case 'candidate': case 'hangup': {
        if (!call || !call.answerer) return;
        const other = me.info.id === call.door ? call.answerer : me.info.id === call.answerer ? call.door : null;
        if (!other) return;
        sendTo(other, msg);
        if (msg.type === 'hangup') calls.delete(msg.call_id);
        return;
      }
      default:
        ws.send(JSON.stringify({ type: 'error', code: 'unknown_type', message: msg.type, ref: msg.type }));
    }
  });
  ws.on('close', () => {
    if (me && clients.get(me.info.id) === me) clients.delete(me.info.id);
  });
});

server.listen(port, host, () => log(`listening on ${host}:${port}`));
const stop = () => { server.close(); process.exit(0); };
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
