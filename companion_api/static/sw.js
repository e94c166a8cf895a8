// Keeps what a visitor has seen readable without a network (a basement gallery, a phone abroad): the take-home
// page of their visit and the pages of the works they opened, network first (always fresh when online), and the
// images and captions of those pages, cache first (their URLs carry a content hash, so they never change).
// Nothing of another origin is ever touched. Each cache is bounded; the oldest entries go first.
"use strict";

var VERSION = "1";
var PAGES = "museum-pages-" + VERSION;
var FILES = "museum-files-" + VERSION;
var MAX_PAGES = 50;
var MAX_FILES = 50;

self.addEventListener("install", function () {
  self.skipWaiting();
});

self.addEventListener("activate", function (event) {
  event.waitUntil(caches.keys().then(function (names) {
    return Promise.all(names.filter(function (name) {
      return name.indexOf("museum-") === 0 && name !== PAGES && name !== FILES;
    }).map(function (name) { return caches.delete(name); }));
  }).then(function () { return self.clients.claim(); }));
});

function isPage(path) {
  // A work's page or a visit's page; not the downloads or the forget step.
  return /^\/a\/[^/]+\/[^/]+$/.test(path) || /^\/v\/[^/]+$/.test(path);
}

function isFile(path) {
  // Images and captions of the pack, and the site's stylesheet and script; audio and video stay online only
  // (large, and fetched in ranges that a cache cannot answer).
  return (/^\/m\//.test(path) && /\.(png|jpe?g|webp|vtt)$/i.test(path)) || /^\/static\//.test(path);
}

function visitPrefix(path) {
  var match = /^\/v\/([^/]+)\//.exec(path);
  return match ? "/v/" + match[1] : null;
}

function trim(cacheName, max) {
  return caches.open(cacheName).then(function (cache) {
    return cache.keys().then(function (keys) {
      var extra = keys.length - max;
      var deletions = [];
      for (var i = 0; i < extra; i += 1) {
        deletions.push(cache.delete(keys[i]));
      }
      return Promise.all(deletions);
    });
  });
}

function forgetVisit(prefix) {
  // After "Forget my visit", nothing of that visit stays on the phone.
  return caches.open(PAGES).then(function (cache) {
    return cache.keys().then(function (keys) {
      return Promise.all(keys.filter(function (request) {
        var path = new URL(request.url).pathname;
        return path === prefix || path.indexOf(prefix + "/") === 0;
      }).map(function (request) { return cache.delete(request); }));
    });
  });
}

function pageKey(url) {
  // One entry per page, whatever its query (?saved=1, ?lang=en, ?via=visit): the latest version seen.
  return url.origin + url.pathname;
}

function networkFirst(event, url) {
  var key = pageKey(url);
  return fetch(event.request).then(function (response) {
    if (response.status === 200 && response.type === "basic" && !response.redirected) {
      var copy = response.clone();
      event.waitUntil(caches.open(PAGES).then(function (cache) {
        return cache.delete(key).then(function () { return cache.put(key, copy); });
      }).then(function () { return trim(PAGES, MAX_PAGES); }));
    } else if (response.status === 404) {
      event.waitUntil(caches.open(PAGES).then(function (cache) { return cache.delete(key); }));
    }
    return response;
  }).catch(function (error) {
    return caches.open(PAGES).then(function (cache) { return cache.match(key); }).then(function (cached) {
      if (cached) {
        return cached;
      }
      throw error;
    });
  });
}

function cacheFirst(event) {
  return caches.open(FILES).then(function (cache) {
    return cache.match(event.request).then(function (cached) {
      if (cached) {
        return cached;
      }
      return fetch(event.request).then(function (response) {
        if (response.status === 200 && response.type === "basic") {
          var copy = response.clone();
          event.waitUntil(cache.put(event.request, copy).then(function () { return trim(FILES, MAX_FILES); }));
        }
        return response;
      });
    });
  });
}

self.addEventListener("fetch", function (event) {
  var request = event.request;
  var url = new URL(request.url);
  if (url.origin !== self.location.origin) {
    return;  // never another origin's
  }
  if (request.method === "POST") {
    var prefix = visitPrefix(url.pathname);
    if (prefix !== null && /\/forget$/.test(url.pathname)) {
      event.respondWith(fetch(request).then(function (response) {
        // Done: the server answers with a redirect to the confirmation (opaque to a navigation's fetch).
        if (response.ok || response.type === "opaqueredirect" || response.status === 303) {
          event.waitUntil(forgetVisit(prefix));
        }
        return response;
      }));
    }
    return;
  }
  if (request.method !== "GET" || request.headers.has("range")) {
    return;
  }
  if (isPage(url.pathname)) {
    event.respondWith(networkFirst(event, url));
  } else if (isFile(url.pathname)) {
    event.respondWith(cacheFirst(event));
  }
});
