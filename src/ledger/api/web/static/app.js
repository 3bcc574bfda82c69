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
function localTimes() {
  // Times come in UTC; show them in the viewer's zone, the UTC text stays in the title (on hover).
  const format = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
  for (const node of document.querySelectorAll("time[datetime]")) {
    const when = new Date(node.getAttribute("datetime"));
    if (Number.isNaN(when.getTime())) continue;
    node.title = node.textContent;
    node.textContent = format.format(when);
  }
}
if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", localTimes);
else localTimes();
