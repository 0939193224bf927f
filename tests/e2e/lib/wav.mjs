// WAV writing/reading and tone detection for audio content checks.
import fs from 'node:fs';

/**
 * Write a 16-bit PCM mono sine WAV. With `burstMs` the sine is on for
 * `burstMs`, then off for as long, like a talker's bursts.
 */
export function writeSineWav(file, { freq = 1000, seconds = 12, sampleRate = 48000, amplitude = 0.5, burstMs = 0 } = {}) {
  const n = Math.round(seconds * sampleRate);
  const samples = new Int16Array(n);
  const burst = Math.round((burstMs * sampleRate) / 1000);
  for (let i = 0; i < n; i++) {
    const on = !burst || Math.floor(i / burst) % 2 === 0;
    samples[i] = on ? Math.round(amplitude * 32767 * Math.sin((2 * Math.PI * freq * i) / sampleRate)) : 0;
  }
  return writePcmWav(file, samples, sampleRate);
}

/**
 * Samples of a speech-like talker confined to one band: syllables of
 * 120..370 ms (a glottal pulse train with a gliding pitch through two
 * formant resonators, rising and falling) separated by pauses of 40..300 ms,
 * then a 4th-order Butterworth band-pass. Pure tones are no test for an echo
 * canceller (a tonal near end can pull its adaptive filter off the room);
 * two talkers in separate bands can be told apart in what a peer receives.
 * Deterministic for a given seed; peak normalised to `amplitude`.
 */
export function speechLikeSamples({ seconds = 12, sampleRate = 48000, seed = 1, band = [150, 1400], formants = [[300, 700], [800, 1300]], amplitude = 0.5 } = {}) {
  let state = (seed * 2654435761) >>> 0 || 1;
  const rand = () => {
    state ^= state << 13; state >>>= 0;
    state ^= state >>> 17;
    state ^= state << 5; state >>>= 0;
    return state / 4294967296;
  };
  const n = Math.round(seconds * sampleRate);
  const out = new Float64Array(n);
  const reson = (f, bw) => {
    const r = Math.exp((-Math.PI * bw) / sampleRate);
    return [2 * r * Math.cos((2 * Math.PI * f) / sampleRate), -r * r];
  };
  const y = [[0, 0], [0, 0]];
  let phase = 0;
  let i = 0;
  while (i < n) {
    const syl = Math.round((0.12 + 0.25 * rand()) * sampleRate);
    const pause = Math.round((0.04 + 0.26 * rand()) * sampleRate);
    const f0 = 100 + 80 * rand();
    const fr = formants.map(([lo, hi]) => reson(lo + (hi - lo) * rand(), 100));
    for (let k = 0; k < syl && i < n; k++, i++) {
      const t = k / syl;
      const env = Math.pow(Math.sin(Math.PI * t), 0.7);
      phase += (f0 * (1 - 0.15 * t)) / sampleRate;
      let x = 0.02 * (rand() - 0.5);
      if (phase >= 1) { phase -= 1; x += 1; }
      let acc = 0;
      fr.forEach(([a, b], j) => {
        const v = x + a * y[j][0] + b * y[j][1];
        y[j][1] = y[j][0];
        y[j][0] = v;
        acc += v;
      });
      out[i] = env * acc;
    }
    i += pause;
  }
  // Band-pass: two high-pass and two low-pass biquads (Butterworth Qs).
  const biquad = (x, type, f, q) => {
    const w = (2 * Math.PI * f) / sampleRate;
    const alpha = Math.sin(w) / (2 * q);
    const c = Math.cos(w);
    const b = type === 'lp' ? [(1 - c) / 2, 1 - c, (1 - c) / 2] : [(1 + c) / 2, -(1 + c), (1 + c) / 2];
    const a0 = 1 + alpha;
    const a1 = -2 * c;
    const a2 = 1 - alpha;
    let x1 = 0, x2 = 0, y1 = 0, y2 = 0;
    for (let k = 0; k < x.length; k++) {
      const v = (b[0] * x[k] + b[1] * x1 + b[2] * x2 - a1 * y1 - a2 * y2) / a0;
      x2 = x1; x1 = x[k]; y2 = y1; y1 = v;
      x[k] = v;
    }
  };
  for (const q of [0.5412, 1.3066]) {
    biquad(out, 'hp', band[0], q);
    biquad(out, 'lp', band[1], q);
  }
  let peak = 0;
  for (const v of out) peak = Math.max(peak, Math.abs(v));
  const scale = peak > 0 ? amplitude / peak : 0;
  const samples = new Int16Array(n);
  for (let k = 0; k < n; k++) samples[k] = Math.round(Math.max(-1, Math.min(1, out[k] * scale)) * 32767);
  return samples;
}

/** Write 16-bit PCM mono samples (Int16Array) as a WAV file. */
export function writePcmWav(file, samples, sampleRate = 48000) {
  const data = Buffer.from(samples.buffer, samples.byteOffset, samples.byteLength);
  const header = Buffer.alloc(44);
  header.write('RIFF', 0, 'ascii');
  header.writeUInt32LE(36 + data.length, 4);
  header.write('WAVE', 8, 'ascii');
  header.write('fmt ', 12, 'ascii');
  header.writeUInt32LE(16, 16);
  header.writeUInt16LE(1, 20);
  header.writeUInt16LE(1, 22);
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
