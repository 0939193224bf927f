// Per-test environment: a namespace, processes, browsers and pages, with
// teardown in finally and diagnostics (logs, page consoles) on failure.
import fs from 'node:fs';
import path from 'node:path';
import { Netns } from './netns.mjs';
import { launchChromium, openPage } from './browser.mjs';

export class TestEnv {
  constructor(ns, title) {
    this.ns = ns;
    this.title = title;
    this.browsers = [];
    this.pages = [];
    this.logs = []; // { label, file, lines }
  }

  static async create(title) {
    const ns = await Netns.create();
    return new TestEnv(ns, title);
  }

  get dir() { return this.ns.dir; }

  file(name) { return path.join(this.ns.dir, name); }

  spawn(label, cmd, args, opts = {}) {
    const logFile = this.file(`${label}.log`);
    const child = this.ns.spawn(cmd, args, { ...opts, logFile, name: label });
    this.logs.push({ label, file: logFile, child });
    return child;
  }

  async browser(opts = {}) {
    const b = await launchChromium(this.ns, opts);
    this.browsers.push(b);
    return b;
  }

  async page(browser, url, label) {
    const p = await openPage(browser, url, { label });
    this.pages.push(p);
    return p;
  }

  /** Print everything useful for diagnosing a failure. */
  dump(err) {
    const out = [];
    out.push(`\n===== ${this.title}: FAILED: ${err && (err.stack || err.message)}`);
    for (const l of this.logs) {
      let text = '';
      try { text = fs.readFileSync(l.file, 'utf8'); } catch { text = l.child.lines.join('\n'); }
      const lines = text.split('\n');
      const tail = lines.length > 400 ? ['… (' + (lines.length - 400) + ' earlier lines)', ...lines.slice(-400)] : lines;
      out.push(`----- ${l.label} log (${l.file}) exit=${JSON.stringify(l.child.exitInfo)}\n${tail.join('\n')}`);
    }
    for (const p of this.pages) {
      out.push(`----- ${p.label} console\n${p.console.slice(-200).join('\n')}`);
    }
    process.stderr.write(out.join('\n') + '\n');
  }

  async close({ keep = false } = {}) {
    for (const b of this.browsers) {
      try { await Promise.race([b.close(), new Promise((r) => setTimeout(r, 5000))]); } catch { /* ignore */ }
    }
    await this.ns.destroy();
    if (!keep && !process.env.E2E_KEEP) {
      try { fs.rmSync(this.ns.dir, { recursive: true, force: true }); } catch { /* ignore */ }
    } else {
      process.stderr.write(`${this.title}: artifacts kept in ${this.ns.dir}\n`);
    }
  }
}

/**
 * Run `body(env)` with a fresh TestEnv; on failure print diagnostics and keep
 * the artifacts; always tear down.
 */
export async function withEnv(title, body) {
  const env = await TestEnv.create(title);
  let failed = false;
  try {
    return await body(env);
  } catch (err) {
    failed = true;
    env.dump(err);
    throw err;
  } finally {
    await env.close({ keep: failed });
  }
}
