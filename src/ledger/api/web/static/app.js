// ledger web page: small progressive enhancements; every page works without this file.
"use strict";
document.addEventListener("submit", (event) => {
  // A form submits once: the button is disabled until the next page arrives.
  const form = event.target;
  if (!(form instanceof HTMLFormElement) || form.method.toLowerCase() !== "post") return;
  if (form.dataset.submitted === "1") { event.preventDefault(); return; }
  form.dataset.submitted = "1";
  for (const button of form.querySelectorAll("button[type=submit]")) button.setAttribute("aria-disabled", "true");
  if (form.action.endsWith("/failed.csv")) setTimeout(() => { form.dataset.submitted = ""; }, 1000);
});
window.addEventListener("pageshow", () => {
  // Back to a page from the browser's cache: its forms may be sent again.
  for (const form of document.forms) {
    delete form.dataset.submitted;
    for (const button of form.querySelectorAll("button[aria-disabled]")) button.removeAttribute("aria-disabled");
  }
});
