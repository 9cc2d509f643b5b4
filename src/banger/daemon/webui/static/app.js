// banger web UI: live updates over server-sent events, in-page buttons, the CSRF header for htmx.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const token = document.querySelector('meta[name="csrf-token"]');
  document.body.addEventListener("htmx:configRequest", (event) => {
    if (token) event.detail.headers["X-CSRF-Token"] = token.content;
  });

  // Lifecycle buttons post in the background: the page stays and the event stream shows the
  // new state and buttons. Delegated, so rows the stream replaces keep working.
  document.addEventListener("submit", (event) => {
    const form = event.target.closest("form[data-async]");
    const out = document.getElementById("action-error");
    if (!form || !out || !window.fetch) return;  // no script support: a plain form post
    event.preventDefault();
    const details = form.closest("details");
    if (details) details.open = false;
    form.querySelectorAll("button").forEach((b) => { b.disabled = true; });
    out.textContent = "";
    fetch(form.getAttribute("action"), {  // not form.action: the button named "action" shadows it
      method: "POST", credentials: "same-origin", body: new URLSearchParams(new FormData(form)),
      headers: {"X-Banger-In-Page": "1", "X-CSRF-Token": token ? token.content : ""},
    }).then(async (response) => {
      if (!response.ok) out.textContent = await response.text();  // text, never HTML
    }).catch(() => { out.textContent = "the daemon did not answer; reload the page"; })
      .finally(() => { form.querySelectorAll("button").forEach((b) => { b.disabled = false; }); });
  });

  // Elements marked data-live="EVENT" take the HTML the server sends for that event.
  const live = document.querySelectorAll("[data-live]");
  if (!live.length || !window.EventSource) return;
  const vm = document.body.dataset.vm;
  const source = new EventSource("/events" + (vm ? "?vm=" + encodeURIComponent(vm) : ""));
  live.forEach((element) => {
    source.addEventListener(element.dataset.live, (event) => {
      // A confirmation the user has opened stays open when its buttons are redrawn.
      const open = [...element.querySelectorAll("details[open][data-action]")]
        .map((d) => d.dataset.action);
      element.innerHTML = event.data;  // server-rendered, autoescaped HTML of our own templates
      element.querySelectorAll("details[data-action]").forEach((d) => {
        if (open.includes(d.dataset.action)) d.open = true;
      });
      if (window.htmx) window.htmx.process(element);
    });
  });
  document.body.dataset.live = "connected";
  source.addEventListener("error", () => { document.body.dataset.live = "retrying"; });
  source.addEventListener("open", () => { document.body.dataset.live = "connected"; });
});
