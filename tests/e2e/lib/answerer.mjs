// Driving the answering page (web/app.js) through its window.intercom hooks.
import { waitFor } from './util.mjs';

export function intercomSnapshot(page) {
  return page.evaluate(() => {
    const i = window.intercom;
    if (!i) return null;
    return {
      state: i.state,
      connection: i.connection,
      callId: i.callId,
      doorName: i.doorName,
      lastError: i.lastError,
      firstAudioAt: i.firstAudioAt,
      firstAudioAtEpoch: i.firstAudioAtEpoch,
      ringAtEpoch: i.ringAtEpoch,
      peerConnections: i.peerConnections,
      micRequests: i.micRequests,
      dataChannel: i.dataChannel ? { label: i.dataChannel.label, readyState: i.dataChannel.readyState } : null,
      message: document.getElementById('message').textContent,
      stateLabel: document.getElementById('state-label').textContent,
      doorNameShown: document.getElementById('door-name').textContent,
      connLabel: document.getElementById('conn-label').textContent,
    };
  });
}

export async function waitForConnection(p, timeout = 15000) {
  return waitFor(async () => (await intercomSnapshot(p.page))?.connection === 'online', {
    timeout, interval: 100, message: `${p.label} to be connected to the hub`,
  });
}

export async function waitForState(p, state, timeout = 15000) {
  let last;
  try {
    return await waitFor(async () => {
      last = await intercomSnapshot(p.page);
      return last && last.state === state ? last : null;
    }, { timeout, interval: 50, message: `${p.label} state "${state}"` });
  } catch (err) {
    err.message += `; last snapshot: ${JSON.stringify(last)}`;
    throw err;
  }
}

/** Events of a given kind/type recorded by the page. */
export function pageEvents(p, filter = {}) {
  return p.page.evaluate((f) => window.intercom.events.filter((e) =>
    Object.entries(f).every(([k, v]) => e[k] === v)), filter);
}

/**
 * Sample the page's remoteDominantHz() until `count` consecutive readings
 * are within `tol` of `expected` (bounded by timeout). Returns the readings.
 */
export async function expectRemoteTone(p, expected, { tol = 30, timeout = 10000, count = 3, win } = {}) {
  const readings = [];
  let streak = 0;
  const target = win || p.page;
  try {
    await waitFor(async () => {
      const hz = await target.evaluate(() => (window.intercom || window.door).remoteDominantHz());
      readings.push(hz);
      if (readings.length > 200) readings.shift();
      streak = hz !== null && Math.abs(hz - expected) <= tol ? streak + 1 : 0;
      return streak >= count;
    }, { timeout, interval: 200, message: `${p.label} to hear ${expected} Hz (±${tol})` });
  } catch (err) {
    err.message += `; recent readings: ${JSON.stringify(readings.slice(-15))}`;
    throw err;
  }
  return readings;
}
