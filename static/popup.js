// After a successful bank link: tell the widget that opened us, then let the user close the popup.
(function () {
  try { if (window.opener) { window.opener.postMessage({ type: "b24app:bank-linked" }, "*"); } } catch (e) {}
  var btn = document.getElementById("close");
  if (btn) { btn.addEventListener("click", function () { window.close(); }); }
})();
