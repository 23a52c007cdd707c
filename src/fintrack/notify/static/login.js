// Shows the sign-in error when the server redirected back with ?error=1. A file of its own
// because the Content-Security-Policy forbids inline scripts.
"use strict";
(function () {
  const params = new URLSearchParams(window.location.search);
  if (params.get("error") === "1") {
    const box = document.getElementById("login-error");
    if (box) box.hidden = false;
  }
})();
