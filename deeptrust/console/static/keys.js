// Keyboard-first review: a key submits the form marked data-key="<key>" on the page.
// Keys typed into a text field, or with a modifier held, are left alone.
"use strict";
document.addEventListener("keydown", function (event) {
  if (event.ctrlKey || event.metaKey || event.altKey || event.repeat) return;
  var target = event.target;
  if (target && (target.tagName === "INPUT" || target.tagName === "TEXTAREA" || target.tagName === "SELECT")) return;
  var form = document.querySelector('form[data-key="' + event.key.toLowerCase() + '"]');
  if (!form || form.dataset.sent) return;
  form.dataset.sent = "1"; // one submission per page: a held or repeated key sends once
  event.preventDefault();
  form.submit();
});
