// WAV writing/reading and tone detection for audio content checks.
import fs from 'node:fs';

/**
 * Write a 16-bit PCM mono sine WAV. With `burstMs` the sine is on for
 * `burstMs`, then off for as long, like a talker's bursts.
 */
export function writeSineWav(file, { freq = 1000, seconds = 12, sampleRate = 48000, amplitude = 0.5, burstMs = 0 } = {}) {
  const n = Math.round(seconds * sampleRate);
  const data = Buffer.alloc(n * 2);
  const burst = Math.round((burstMs * sampleRate) / 1000);
  for (let i = 0; i < n; i++) {
    const on = !burst || Math.floor(i / burst) % 2 === 0;
    const v = on ? Math.round(amplitude * 32767 * Math.sin((2 * Math.PI * freq * i) / sampleRate)) : 0;
    data.writeInt16LE(v, i * 2);
  }
  const header = Buffer.alloc(44);
  header.write('RIFF', 0, 'ascii');
  header.writeUInt32LE(36 + data.length, 4);
  header.write('WAVE', 8, 'ascii');
  header.write('fmt ', 12, 'ascii');
  header.writeUInt32LE(16, 16);
  header.writeUInt16LE(1, 20); // PCM
  header.writeUInt16LE(1, 22); // mono
  header.writeUInt32LE(sampleRate, 24);
  header.writeUInt32LE(sampleRate * 2, 28);
  header.writeUInt16LE(2, 32);
  header.writeUInt16LE(16, 34);
  header.write('data', 36, 'ascii');
  header.writeUInt32LE(data.length, 40);
  fs.writeFileSync(file, Buffer.concat([header, data]));
  return file;
}

/**
 * Parse a 16-bit PCM WAV that may still be growing: chunk sizes in the header
 * can lag behind (or be 0 / 0xFFFFFFFF); the data chunk is taken to run to the
 * end of the file. Returns { sampleRate, channels, samples: Float32Array (first channel) }.
 */
export function parseWav(buf) {
  if (buf.length < 12 || buf.toString('ascii', 0, 4) !== 'RIFF' || buf.toString('ascii', 8, 12) !== 'WAVE') {
    throw new Error(`not a RIFF/WAVE file (${buf.length} bytes)`);
  }
  let off = 12;
  let fmt = null;
  for (let guard = 0; guard < 64 && off + 8 <= buf.length; guard++) {
    const id = buf.toString('ascii', off, off + 4);
    const size = buf.readUInt32LE(off + 4);
    const body = off + 8;
    if (id === 'fmt ') {
      fmt = {
        format: buf.readUInt16LE(body),
        channels: buf.readUInt16LE(body + 2),
        sampleRate: buf.readUInt32LE(body + 4),
        bits: buf.readUInt16LE(body + 14),
      };
    } else if (id === 'data') {
      if (!fmt) throw new Error('WAV data chunk before fmt chunk');
      if (fmt.bits !== 16 || (fmt.format !== 1 && fmt.format !== 0xfffe)) {
        throw new Error(`unsupported WAV encoding: format ${fmt.format}, ${fmt.bits} bits`);
      }
      const frameBytes = 2 * fmt.channels;
      const available = buf.length - body;
      const declared = size === 0 || size === 0xffffffff ? available : size;
      const len = Math.max(declared, available); // the header may lag the data
      const frames = Math.floor(Math.min(len, available) / frameBytes);
      const samples = new Float32Array(frames);
      for (let i = 0; i < frames; i++) samples[i] = buf.readInt16LE(body + i * frameBytes) / 32768;
      return { sampleRate: fmt.sampleRate, channels: fmt.channels, samples };
    }
    off = body + size + (size & 1);
  }
  throw new Error('WAV has no data chunk');
}

export function readWav(file) {
  return parseWav(fs.readFileSync(file));
}

export function rms(samples) {
  let sum = 0;
  for (let i = 0; i < samples.length; i++) sum += samples[i] * samples[i];
  return samples.length ? Math.sqrt(sum / samples.length) : 0;
}

function goertzelPower(x, sampleRate, freq) {
  const w = (2 * Math.PI * freq) / sampleRate;
  const coeff = 2 * Math.cos(w);
  let s1 = 0;
  let s2 = 0;
  for (let i = 0; i < x.length; i++) {
    const s0 = x[i] + coeff * s1 - s2;
    s2 = s1;
    s1 = s0;
  }
  return s1 * s1 + s2 * s2 - coeff * s1 * s2;
}

/**
 * Dominant frequency between lo and hi Hz (Goertzel scan on a Hann-windowed
 * block, coarse then fine). Returns { hz, rms, ratio } where ratio is the
 * peak power over the mean scanned power; hz is null when the block is silent
 * (rms below minRms).
 */
export function dominantFrequency(samples, sampleRate, { lo = 100, hi = 4000, minRms = 1e-4 } = {}) {
  const level = rms(samples);
  if (samples.length < 256 || level < minRms) return { hz: null, rms: level, ratio: 0 };
  const x = new Float32Array(samples.length);
  const n = samples.length;
  for (let i = 0; i < n; i++) x[i] = samples[i] * (0.5 - 0.5 * Math.cos((2 * Math.PI * i) / (n - 1)));
  let best = lo;
  let bestP = -1;
  let sum = 0;
  let count = 0;
  for (let f = lo; f <= hi; f += 10) {
    const p = goertzelPower(x, sampleRate, f);
    sum += p;
    count++;
    if (p > bestP) { bestP = p; best = f; }
  }
  let fine = best;
  for (let f = Math.max(lo, best - 10); f <= Math.min(hi, best + 10); f += 1) {
    const p = goertzelPower(x, sampleRate, f);
    if (p > bestP) { bestP = p; fine = f; }
  }
  return { hz: fine, rms: level, ratio: count ? bestP / (sum / count) : 0 };
}

/** Dominant frequency of the last `seconds` of a (possibly growing) WAV file. */
export function wavTailDominant(file, seconds = 1) {
  const { sampleRate, samples } = readWav(file);
  const n = Math.min(samples.length, Math.round(seconds * sampleRate));
  const tail = samples.subarray(samples.length - n);
  return { ...dominantFrequency(tail, sampleRate), totalSeconds: samples.length / sampleRate, sampleRate };
}
