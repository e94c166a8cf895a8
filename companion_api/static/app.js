// The pages work without this script: it only registers the service worker that keeps the visit page and the
// works opened readable offline (static/sw.js, served at /sw.js so that its scope covers the whole site).
"use strict";
if ("serviceWorker" in navigator && window.isSecureContext) {
  window.addEventListener("load", function () {
    navigator.serviceWorker.register("/sw.js", { scope: "/" }).catch(function () {
      // No offline copy then; nothing else depends on it.
    });
  });
}
