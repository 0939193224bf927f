// A TCP relay run inside a test namespace between the door and the hub, so a
// test can cut the signaling path without touching either process.
// Usage: node relay.mjs LISTEN_HOST:PORT TARGET_HOST:PORT
// Signals: SIGUSR1 = cut (destroy every connection, refuse new ones);
//          SIGUSR2 = restore (accept again).
import net from 'node:net';

const [listenArg, targetArg] = process.argv.slice(2);
const split = (s) => { const i = s.lastIndexOf(':'); return [s.slice(0, i), Number(s.slice(i + 1))]; };
const [lhost, lport] = split(listenArg);
const [thost, tport] = split(targetArg);
const sockets = new Set();
let cut = false;
let nextId = 1;

const log = (msg) => process.stderr.write(`${new Date().toISOString()} relay: ${msg}\n`);

const server = net.createServer((client) => {
  if (cut) {
    client.destroy();
    log('refused a connection (cut)');
    return;
  }
  const id = nextId++;
  const upstream = net.connect({ host: thost, port: tport });
  client.setNoDelay(true);
  upstream.setNoDelay(true);
  sockets.add(client);
  sockets.add(upstream);
  log(`connection ${id} opened`);
  client.pipe(upstream);
  upstream.pipe(client);
  let closed = false;
  const close = () => {
    if (closed) return;
    closed = true;
    client.destroy();
    upstream.destroy();
    sockets.delete(client);
    sockets.delete(upstream);
    log(`connection ${id} closed`);
  };
  for (const s of [client, upstream]) {
    s.on('error', close);
    s.on('close', close);
  }
});

server.listen(lport, lhost, () => log(`listening on ${lhost}:${lport} -> ${thost}:${tport}`));

process.on('SIGUSR1', () => {
  cut = true;
  // resetAndDestroy sends RST so the peer sees the loss at once.
  for (const s of sockets) (s.resetAndDestroy ? s.resetAndDestroy() : s.destroy());
  sockets.clear();
  log('cut');
});
process.on('SIGUSR2', () => {
  cut = false;
  log('restored');
});
const stop = () => { server.close(); process.exit(0); };
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
