// Tone measurements for the audio tests: raw PCM files written by ALSA's
// `file` plugin, and per-frequency levels of the remote audio in a page.
import fs from 'node:fs';
import { dominantFrequency } from './wav.mjs';
import { waitFor } from './util.mjs';

export const RATE = 48000;

/**
 * Write `seconds` of a sine (48 kHz mono S16LE, no header) followed by
 * `padSeconds` of silence: ALSA's file plugin repeats the last period once
 * its infile ends, and the silence keeps that repeat silent.
 */
export function writeRawTone(file, { freq, seconds, padSeconds = 2, amplitude = 0.25 }) {
  const n = Math.round(seconds * RATE);
  const buf = Buffer.alloc((n + Math.round(padSeconds * RATE)) * 2);
  for (let i = 0; i < n; i++) {
    buf.writeInt16LE(Math.round(Math.sin((2 * Math.PI * freq * i) / RATE) * amplitude * 32767), i * 2);
  }
  fs.writeFileSync(file, buf);
}

/** Samples (-1..1) of a growing raw S16LE file: the last `seconds`, and its length in seconds. */
export function rawTail(file, seconds) {
  let size = 0;
  try { size = fs.statSync(file).size; } catch { return { samples: new Float32Array(0), totalSeconds: 0 }; }
  const want = Math.min(Math.floor(size / 2), Math.round(seconds * RATE)) * 2;
  const fd = fs.openSync(file, 'r');
  const buf = Buffer.alloc(want);
  try { fs.readSync(fd, buf, 0, want, Math.floor(size / 2) * 2 - want); } finally { fs.closeSync(fd); }
  const out = new Float32Array(want / 2);
  for (let i = 0; i < out.length; i++) out[i] = buf.readInt16LE(i * 2) / 32768;
  return { samples: out, totalSeconds: size / 2 / RATE };
}

/** Frequencies dominating the whole of a raw file, in 0.5 s blocks (null for silence). */
export function rawBlocks(file, blockSeconds = 0.5) {
  const all = rawTail(file, 1e9).samples;
  const n = Math.round(blockSeconds * RATE);
  const out = [];
  for (let i = 0; i + n <= all.length; i += n) out.push(dominantFrequency(all.subarray(i, i + n), RATE).hz);
  return out;
}

/**
 * Wait until the last second of the raw playback file is dominated by
 * `expected` Hz (±tol) on `count` consecutive reads that see the file grow.
 */
export async function expectRawHears(file, expected, { timeout = 15000, count = 2, tol = 30 } = {}) {
  const seen = [];
  let streak = 0;
  let last = -1;
  try {
    await waitFor(() => {
      const { samples, totalSeconds } = rawTail(file, 1);
      const r = dominantFrequency(samples, RATE);
      const grew = totalSeconds > last;
      last = totalSeconds;
      seen.push({ hz: r.hz, rms: Number(r.rms.toFixed(4)), seconds: Number(totalSeconds.toFixed(2)) });
      if (!grew) return false;
      streak = r.hz !== null && Math.abs(r.hz - expected) <= tol ? streak + 1 : 0;
      return streak >= count;
    }, { timeout, interval: 300, message: `the door's playback file (${file}) to hold ${expected} Hz ±${tol}` });
  } catch (err) {
    err.message += `; recent analyses: ${JSON.stringify(seen.slice(-10))}`;
    throw err;
  }
}

/**
 * Mean power (dBFS) of the page's remote audio in each band [loHz, hiHz],
 * summed over the analyser's bins, averaged over `reads` spectra.
 */
export async function remoteBandLevels(page, bands, { reads = 20, intervalMs = 150 } = {}) {
  return page.evaluate(async ({ bands, reads, intervalMs }) => {
    const el = document.getElementById('remote-audio');
    if (!el || !el.srcObject) throw new Error('no remote stream');
    const ctx = new AudioContext();
    await ctx.resume();
    const src = ctx.createMediaStreamSource(el.srcObject);
    const an = ctx.createAnalyser();
    an.fftSize = 8192;
    an.smoothingTimeConstant = 0;
    an.minDecibels = -160;
    an.maxDecibels = 0;
    src.connect(an);
    const spec = new Float32Array(an.frequencyBinCount);
    const acc = bands.map(() => 0);
    const binHz = ctx.sampleRate / an.fftSize;
    await new Promise((r) => setTimeout(r, 300));
    for (let k = 0; k < reads; k++) {
      an.getFloatFrequencyData(spec);
      bands.forEach(([lo, hi], j) => {
        let p = 0;
        for (let b = Math.ceil(lo / binHz); b <= Math.floor(hi / binHz); b++) p += Math.pow(10, spec[b] / 10);
        acc[j] += p;
      });
      await new Promise((r) => setTimeout(r, intervalMs));
    }
    src.disconnect();
    await ctx.close();
    return acc.map((p) => 10 * Math.log10(Math.max(p / reads, 1e-30)));
  }, { bands, reads, intervalMs });
}
