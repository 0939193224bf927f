// Runs inside a test's network namespace: listens on Unix socket paths and
// pipes each connection to a TCP host:port inside the namespace.
// Usage: node nsforward.mjs /path/a.sock=127.0.0.1:7081 [/path/b.sock=10.99.1.1:8080 ...]
import fs from 'node:fs';
import net from 'node:net';

const servers = [];
for (const arg of process.argv.slice(2)) {
  const eq = arg.lastIndexOf('=');
  const sockPath = arg.slice(0, eq);
  const target = arg.slice(eq + 1);
  const colon = target.lastIndexOf(':');
  const host = target.slice(0, colon);
  const port = Number(target.slice(colon + 1));
  try { fs.unlinkSync(sockPath); } catch { /* none */ }
  const server = net.createServer((client) => {
    const upstream = net.connect({ host, port });
    upstream.setNoDelay(true);
    client.pipe(upstream);
    upstream.pipe(client);
    const close = () => { client.destroy(); upstream.destroy(); };
    client.on('error', close);
    upstream.on('error', close);
    client.on('close', close);
    upstream.on('close', close);
  });
  server.listen(sockPath);
  servers.push(server);
}

const stop = () => {
  for (const s of servers) s.close();
  process.exit(0);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
