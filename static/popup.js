/* The bank-link popup's last page: "Close" closes the window; the tab that opened it notices and refreshes. */
(function () {
  'use strict';
  var button = document.getElementById('close');
  if (!button) return;
  button.addEventListener('click', function () {
    try { if (window.opener) window.opener.focus(); } catch (e) { /* cross-origin opener */ }
    window.close();
  });
})();
