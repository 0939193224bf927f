// Probes put into the resident's page before its own script runs
// (Playwright addInitScript): every RTCPeerConnection the page creates is
// kept, so the test can read getStats(), and the first remote audio track is
// fed to an AudioWorklet that measures audible gaps sample-exactly.
//
// A gap is a run of render quanta (128 samples, 2.7 ms at 48 kHz) whose peak
// stays below -60 dBFS after the first audible quantum: the far end's steady
// tone has stopped being heard, whatever the reason (loss the decoder could
// not conceal, a jitter buffer running dry). Concealed audio that still
// sounds is not a gap; getStats counts it as concealedSamples.

/** The init script. Self-contained: Playwright sends its source text. */
export function audioProbeInit() {
  const Native = window.RTCPeerConnection;
  if (!Native || window.__probe) return;
  const probe = { pcs: [], gaps: null, error: null, metering: null, follow: null };
  window.__probe = probe;
  const worklet = `
    class GapMeter extends AudioWorkletProcessor {
      constructor() {
        super();
        this.reset();
        this.port.onmessage = (e) => {
          if (e.data === 'reset') this.reset();
          this.port.postMessage({ quanta: this.quanta, silent: this.silent, longest: this.longest,
            gaps: this.gaps, heard: this.heard, rate: sampleRate });
        };
      }
      reset() { this.quanta = 0; this.silent = 0; this.run = 0; this.longest = 0; this.gaps = 0; this.heard = false; }
      process(inputs) {
        const ch = inputs[0] && inputs[0][0];
        let peak = 0;
        if (ch) for (let i = 0; i < ch.length; i++) { const v = Math.abs(ch[i]); if (v > peak) peak = v; }
        const audible = peak >= 0.001;
        if (audible) {
          if (this.run > 0) this.gaps += 1;
          this.heard = true;
          this.run = 0;
        } else if (this.heard) {
          this.run += 1;
          this.silent += 1;
          if (this.run > this.longest) this.longest = this.run;
        }
        if (this.heard) this.quanta += 1;
        return true;
      }
    }
    registerProcessor('gap-meter', GapMeter);`;
  async function meter(stream) {
    const ctx = new AudioContext({ sampleRate: 48000 });
    const url = URL.createObjectURL(new Blob([worklet], { type: 'application/javascript' }));
    await ctx.audioWorklet.addModule(url);
    const node = new AudioWorkletNode(ctx, 'gap-meter');
    let source = ctx.createMediaStreamSource(stream);
    source.connect(node);
    // A call whose media session is replaced (a stalled DTLS handshake gets
    // a new peer connection) plays on a new track: the meter follows it.
    probe.follow = (next) => {
      source.disconnect();
      source = ctx.createMediaStreamSource(next);
      source.connect(node);
    };
    // Pulled by the graph only when connected to the destination: through a
    // muted gain, so the probe adds nothing to what the page plays.
    const mute = ctx.createGain();
    mute.gain.value = 0;
    node.connect(mute).connect(ctx.destination);
    await ctx.resume();
    const ask = (what) => new Promise((resolve) => {
      node.port.onmessage = (e) => {
        const d = e.data;
        const ms = (q) => Math.round((q * 128 * 1000) / d.rate);
        resolve({ heardMs: ms(d.quanta), silentMs: ms(d.silent), longestGapMs: ms(d.longest), gaps: d.gaps, heard: d.heard });
      };
      node.port.postMessage(what);
    });
    probe.gaps = { read: () => ask('read'), reset: () => ask('reset') };
  }
  window.RTCPeerConnection = class extends Native {
    constructor(...args) {
      super(...args);
      probe.pcs.push(this);
      this.addEventListener('track', (ev) => {
        if (ev.track.kind !== 'audio') return;
        const stream = ev.streams[0] || new MediaStream([ev.track]);
        if (probe.metering) {
          // The newest connection's track is the call's audio.
          probe.metering.then(() => probe.follow && probe.follow(stream)).catch(() => {});
          return;
        }
        probe.metering = meter(stream).catch((e) => { probe.error = String(e && e.message || e); });
      });
    }
  };
  /** Inbound audio figures of the newest peer connection (getStats). */
  probe.inbound = async () => {
    const pc = probe.pcs[probe.pcs.length - 1];
    if (!pc) return null;
    for (const s of (await pc.getStats()).values()) {
      if (s.type === 'inbound-rtp' && s.kind === 'audio') {
        return {
          packetsReceived: s.packetsReceived,
          packetsLost: s.packetsLost,
          jitterMs: s.jitter * 1000,
          totalSamplesReceived: s.totalSamplesReceived,
          concealedSamples: s.concealedSamples,
          silentConcealedSamples: s.silentConcealedSamples,
          concealmentEvents: s.concealmentEvents,
          jitterBufferDelay: s.jitterBufferDelay,
          jitterBufferEmittedCount: s.jitterBufferEmittedCount,
          fecPacketsReceived: s.fecPacketsReceived,
        };
      }
    }
    return null;
  };
  /** ICE candidate pairs and DTLS transport of the newest peer connection, for diagnostics. */
  probe.pairs = async () => {
    const pc = probe.pcs[probe.pcs.length - 1];
    if (!pc) return null;
    const stats = await pc.getStats();
    const cand = (id) => { const c = stats.get(id); return c ? `${c.candidateType} ${c.address}:${c.port}` : id; };
    const out = { ice: pc.iceConnectionState, connection: pc.connectionState, transports: [], pairs: [] };
    for (const s of stats.values()) {
      if (s.type === 'transport') {
        out.transports.push({ dtlsState: s.dtlsState, dtlsRole: s.dtlsRole, iceState: s.iceState,
          packetsSent: s.packetsSent, packetsReceived: s.packetsReceived, bytesSent: s.bytesSent, bytesReceived: s.bytesReceived });
      }
      if (s.type === 'candidate-pair') {
        out.pairs.push({ local: cand(s.localCandidateId), remote: cand(s.remoteCandidateId), state: s.state, nominated: s.nominated,
          requestsSent: s.requestsSent, responsesReceived: s.responsesReceived, requestsReceived: s.requestsReceived, responsesSent: s.responsesSent });
      }
    }
    return out;
  };
  /** The page's own microphone as captured (getStats media-source). */
  probe.source = async () => {
    const pc = probe.pcs[probe.pcs.length - 1];
    if (!pc) return null;
    for (const s of (await pc.getStats()).values()) {
      if (s.type === 'media-source' && s.kind === 'audio') {
        return { energy: s.totalAudioEnergy, duration: s.totalSamplesDuration, level: s.audioLevel };
      }
    }
    return null;
  };
  /** Outbound audio figures of the newest peer connection (getStats). */
  probe.outbound = async () => {
    const pc = probe.pcs[probe.pcs.length - 1];
    if (!pc) return null;
    for (const s of (await pc.getStats()).values()) {
      if (s.type === 'outbound-rtp' && s.kind === 'audio') {
        return { t: s.timestamp, bytesSent: s.bytesSent, packetsSent: s.packetsSent, targetBitrate: s.targetBitrate };
      }
    }
    return null;
  };
}

/** Difference of two `inbound()` snapshots, with the concealed fraction. */
export function inboundDelta(a, b) {
  const d = (k) => (b[k] ?? 0) - (a[k] ?? 0);
  const samples = d('totalSamplesReceived');
  const concealed = d('concealedSamples');
  return {
    packetsReceived: d('packetsReceived'),
    packetsLost: d('packetsLost'),
    samples,
    concealed,
    silentConcealed: d('silentConcealedSamples'),
    concealmentEvents: d('concealmentEvents'),
    concealedFraction: samples > 0 ? concealed / samples : null,
    jitterBufferMs: d('jitterBufferEmittedCount') > 0 ? (d('jitterBufferDelay') / d('jitterBufferEmittedCount')) * 1000 : null,
    jitterMs: b.jitterMs,
  };
}
