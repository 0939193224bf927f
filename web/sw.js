// intercomd service worker: keeps the answering page's shell for when the
// station cannot be reached, and turns Web Push messages from the hub into
// ringing notifications (payloads: docs/signaling.md).
// Plain JavaScript, no build step.
'use strict';

var CACHE = 'intercom-shell-v2';
// Only these files are ever stored: none holds a token or call data.
var SHELL = [
  '/',
  '/app.js',
  '/call.js',
  '/signal.js',
  '/media.js',
  '/style.css',
  '/manifest.webmanifest',
  '/favicon.ico',
  '/icons/icon-192.png',
  '/icons/icon-512.png',
  '/icons/maskable-512.png',
  '/icons/apple-touch-icon.png'
];

self.addEventListener('install', function (event) {
  event.waitUntil(caches.open(CACHE).then(function (cache) {
    return cache.addAll(SHELL.map(function (p) { return new Request(p, { cache: 'reload' }); }));
  }).then(function () { return self.skipWaiting(); }));
});

self.addEventListener('activate', function (event) {
  event.waitUntil(caches.keys().then(function (names) {
    return Promise.all(names.filter(function (n) { return n !== CACHE; }).map(function (n) { return caches.delete(n); }));
  }).then(function () { return self.clients.claim(); }));
});

// The cache key of a request, or null when it must never be cached:
// other origins, anything but GET, and any path not in the shell
// (/ws, /client.json, …). The page's own query (?raw=1, an old ?token=…)
// is dropped: the shell is the same file whatever the query.
function shellKey(request) {
  if (request.method !== 'GET') return null;
  var url = new URL(request.url);
  if (url.origin !== self.location.origin) return null;
  if (request.mode === 'navigate') return url.pathname === '/' ? '/' : null;
  if (url.search) return null;
  return SHELL.indexOf(url.pathname) >= 0 ? url.pathname : null;
}

// Network first, so a station update shows at once; the stored copy only
// when the station cannot be reached.
self.addEventListener('fetch', function (event) {
  var key = shellKey(event.request);
  if (!key) return; // the browser fetches it as if there were no worker
  event.respondWith(fetch(event.request).then(function (response) {
    if (response.ok && response.type === 'basic') {
      var copy = response.clone();
      caches.open(CACHE).then(function (cache) { return cache.put(key, copy); }).catch(function () {});
    }
    return response;
  }, function (err) {
    return caches.match(key, { cacheName: CACHE }).then(function (cached) {
      if (cached) return cached;
      throw err;
    });
  }));
});

// ---------------------------------------------------------------- push
function hhmm(ms) {
  var d = new Date(typeof ms === 'number' && isFinite(ms) ? ms : Date.now());
  return ('0' + d.getHours()).slice(-2) + ':' + ('0' + d.getMinutes()).slice(-2);
}

function closeTagged(tag) {
  return self.registration.getNotifications({ tag: tag }).then(function (list) {
    list.forEach(function (n) { n.close(); });
  });
}

// A decrypted push payload (docs/signaling.md): `ring` shows a ringing
// notification, `end` takes it away.
function onPush(data) {
  if (!data || typeof data !== 'object' || typeof data.call_id !== 'string') {
    // Every push must show something (userVisibleOnly).
    return self.registration.showNotification('Door intercom', { body: 'Someone may be at the door', tag: 'intercom' });
  }
  if (data.kind === 'end') return closeTagged(data.call_id);
  var door = data.door && typeof data.door === 'object' ? data.door : {};
  var name = String(door.name || door.id || 'Door');
  return self.registration.showNotification(name, {
    body: 'Ringing at ' + hhmm(data.at_ms),
    tag: data.call_id,
    renotify: true,
    requireInteraction: true,
    vibrate: [500, 250, 500, 250, 500],
    icon: '/icons/icon-192.png',
    badge: '/icons/icon-192.png',
    timestamp: typeof data.at_ms === 'number' ? data.at_ms : Date.now(),
    actions: [{ action: 'answer', title: 'Answer' }, { action: 'decline', title: 'Decline' }],
    data: { call_id: data.call_id, door: { id: door.id || null, name: name } }
  });
}

// Answer (or a tap on the notification) or decline: hand it to an open app
// window, or open one that acts on it once signed in.
function onNotificationClick(action, notification) {
  var data = (notification && notification.data) || {};
  var callId = String(data.call_id || (notification && notification.tag) || '');
  if (notification && typeof notification.close === 'function') notification.close();
  var type = action === 'decline' ? 'decline' : 'answer';
  if (!callId) return self.clients.openWindow ? self.clients.openWindow('/') : Promise.resolve(null);
  return self.clients.matchAll({ type: 'window', includeUncontrolled: true }).then(function (wins) {
    var mine = wins.filter(function (w) { return new URL(w.url).origin === self.location.origin; });
    mine.sort(function (a, b) { return (b.focused ? 2 : b.visibilityState === 'visible' ? 1 : 0) - (a.focused ? 2 : a.visibilityState === 'visible' ? 1 : 0); });
    var win = mine[0];
    if (win) {
      win.postMessage({ type: type, call_id: callId });
      // Focusing needs the click's user activation; without it the window
      // still acts on the message.
      return win.focus ? win.focus().catch(function () { return win; }) : win;
    }
    return self.clients.openWindow('/#' + type + '=' + encodeURIComponent(callId));
  });
}

self.intercomOnPush = onPush;
self.intercomOnNotificationClick = onNotificationClick;

self.addEventListener('push', function (event) {
  var data = null;
  try { data = event.data ? event.data.json() : null; } catch (e) { data = null; }
  event.waitUntil(self.intercomOnPush(data));
});

self.addEventListener('notificationclick', function (event) {
  event.waitUntil(self.intercomOnNotificationClick(event.action, event.notification));
});
