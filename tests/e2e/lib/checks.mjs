// Audio content checks shared by the daemon tests.
import { wavTailDominant } from './wav.mjs';
import { waitFor } from './util.mjs';

export const TOL_HZ = 30;

/**
 * Wait until the last ~1 s of the door's record_file WAV is dominated by
 * `expected` Hz (±TOL_HZ) on `count` consecutive reads that see new audio.
 */
export async function expectDoorHears(recordFile, expected, { timeout = 10000, count = 2 } = {}) {
  const seen = [];
  let streak = 0;
  let lastTotal = -1;
  try {
    await waitFor(() => {
      let r;
      try {
        r = wavTailDominant(recordFile, 1);
      } catch (err) {
        seen.push(`unreadable: ${err.message}`);
        return false;
      }
      const grew = r.totalSeconds > lastTotal;
      lastTotal = r.totalSeconds;
      seen.push({ hz: r.hz, rms: Number(r.rms.toFixed(4)), seconds: Number(r.totalSeconds.toFixed(2)) });
      if (seen.length > 100) seen.shift();
      if (!grew) return false;
      streak = r.hz !== null && Math.abs(r.hz - expected) <= TOL_HZ ? streak + 1 : 0;
      return streak >= count;
    }, { timeout, interval: 300, message: `the door's speaker (${recordFile}) to play ${expected} Hz ±${TOL_HZ}` });
  } catch (err) {
    err.message += `; recent analyses: ${JSON.stringify(seen.slice(-10))}`;
    throw err;
  }
  return seen;
}

/** Seconds of audio in the door's record_file (0 if unreadable). */
export function recordedSeconds(recordFile) {
  try {
    return wavTailDominant(recordFile, 0.1).totalSeconds;
  } catch {
    return 0;
  }
}

/**
 * Wait until the door's speaker stops playing `freq` Hz: new audio in the
 * record_file whose last ~0.5 s is silent or dominated by something else.
 */
export async function expectDoorStopsHearing(recordFile, freq, { timeout = 5000 } = {}) {
  const seen = [];
  const start = recordedSeconds(recordFile);
  try {
    await waitFor(() => {
      const r = wavTailDominant(recordFile, 0.5);
      seen.push({ hz: r.hz, rms: Number(r.rms.toFixed(4)), seconds: Number(r.totalSeconds.toFixed(2)) });
      if (seen.length > 100) seen.shift();
      return r.totalSeconds >= start + 0.5 && (r.hz === null || Math.abs(r.hz - freq) > TOL_HZ);
    }, { timeout, interval: 200, message: `the door's speaker to stop playing ${freq} Hz` });
  } catch (err) {
    err.message += `; recent analyses: ${JSON.stringify(seen.slice(-10))}`;
    throw err;
  }
}
