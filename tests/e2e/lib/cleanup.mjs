// Teardown that always runs: registered cleanups execute in reverse order on
// normal completion (runCleanups), on process exit, and on SIGINT/SIGTERM.
// Every cleanup must be synchronous-safe (it may run from the 'exit' hook).

const cleanups = [];
let installed = false;
let running = false;

function runAllSync() {
  if (running) return;
  running = true;
  try {
    while (cleanups.length > 0) {
      const entry = cleanups.pop();
      try {
        entry.fn();
      } catch (err) {
        process.stderr.write(`cleanup "${entry.name}" failed: ${err.message}\n`);
      }
    }
  } finally {
    running = false;
  }
}

function install() {
  if (installed) return;
  installed = true;
  process.on('exit', runAllSync);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
    process.once(sig, () => {
      runAllSync();
      process.exit(sig === 'SIGINT' ? 130 : 143);
    });
  }
  process.on('uncaughtException', (err) => {
    process.stderr.write(`uncaught exception: ${err.stack || err}\n`);
    runAllSync();
    process.exit(1);
  });
}

/** Register a synchronous cleanup; returns a function that runs it early (once). */
export function onCleanup(name, fn) {
  install();
  const entry = { name, fn };
  cleanups.push(entry);
  return () => {
    const i = cleanups.indexOf(entry);
    if (i >= 0) {
      cleanups.splice(i, 1);
      fn();
    }
  };
}

export function runCleanups() {
  runAllSync();
}
