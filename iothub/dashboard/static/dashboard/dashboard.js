// The dashboard's live parts: every element with data-refresh-url is replaced by a fresh
// server-rendered copy every data-refresh-seconds, while the tab is visible. Rendering stays on
// the server (escaping included); this only swaps HTML.
(function () {
  "use strict";

  function refresh(element) {
    if (document.hidden) return;
    fetch(element.dataset.refreshUrl, { credentials: "same-origin", headers: { "X-Requested-With": "fetch" } })
      .then(function (response) {
        if (response.redirected || !response.ok) throw new Error("refresh: " + response.status);
        return response.text();
      })
      .then(function (html) {
        element.innerHTML = html;
        element.dataset.refreshedAt = new Date().toISOString();
      })
      .catch(function () { /* keep what is shown; the next turn tries again */ });
  }

  document.querySelectorAll("[data-refresh-url]").forEach(function (element) {
    var seconds = Math.max(1, parseInt(element.dataset.refreshSeconds || "10", 10));
    setInterval(function () { refresh(element); }, seconds * 1000);
  });
})();
