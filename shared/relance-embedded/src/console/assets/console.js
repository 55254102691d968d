// Relance console: keeps the counts moving and asks before archiving. Every element with data-refresh="URL" is
// replaced by a fresh copy of that URL's HTML fragment every few seconds (a same-origin
// GET with the session cookie); data-refresh-image names an <img> reloaded at the same
// time (the diagram). No inline script anywhere: the page's CSP allows only this file.
"use strict";
(function () {
  var EVERY_MS = 3000;
  function refresh(el) {
    var url = el.getAttribute("data-refresh");
    fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (r) {
        if (r.redirected || !r.ok) { return null; }
        return r.text();
      })
      .then(function (html) {
        if (html === null || html === undefined) { return; }
        if (el.getAttribute("data-last") === html) { return; }
        el.setAttribute("data-last", html);
        el.innerHTML = html;
        var imgId = el.getAttribute("data-refresh-image");
        var img = imgId && document.getElementById(imgId);
        if (img) {
          var base = img.getAttribute("src").split("?")[0];
          img.setAttribute("src", base + "?t=" + Date.now());
        }
      })
      .catch(function () { /* offline for a moment: the next round tries again */ });
  }
  // A form with data-confirm asks first (archiving cannot be undone).
  document.addEventListener("submit", function (event) {
    var form = event.target;
    var question = form && form.getAttribute && form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) { event.preventDefault(); }
  });
  function start() {
    var els = document.querySelectorAll("[data-refresh]");
    Array.prototype.forEach.call(els, function (el) {
      setInterval(function () { refresh(el); }, EVERY_MS);
    });
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
