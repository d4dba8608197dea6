// The console's own script (no inline script: the CSP allows only our files).
// htmx sends the session's CSRF token with every request it makes (issue 30).
document.addEventListener("htmx:configRequest", function (event) {
  var meta = document.querySelector('meta[name="csrf-token"]');
  if (meta) { event.detail.headers["X-CSRF-Token"] = meta.getAttribute("content"); }
});
// a refusal answered to an htmx request (4xx/5xx) is still shown: its fragment replaces
// the target, since the server writes the French OperationOutcome message into it
document.addEventListener("htmx:beforeSwap", function (event) {
  var status = event.detail.xhr.status;
  if (status >= 400 && status < 600) { event.detail.shouldSwap = true; event.detail.isError = false; }
});
// <button data-confirm="…">: ask before an irreversible action
document.addEventListener("click", function (event) {
  var target = event.target.closest("[data-confirm]");
  if (target && !window.confirm(target.getAttribute("data-confirm"))) { event.preventDefault(); }
});
// <input type="datetime-local" data-now>: today's local time as the default
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("input[data-now]").forEach(function (input) {
    if (!input.value) {
      var d = new Date(Date.now() - new Date().getTimezoneOffset() * 60000);
      input.value = d.toISOString().slice(0, 16);
    }
  });
});
