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
document.addEventListener("DOMContentLoaded", () => {
  // Filters apply as soon as a select changes.
  for (const select of document.querySelectorAll("form.filters select")) {
    select.addEventListener("change", () => select.form.requestSubmit());
  }
});
