// banger web UI: live updates over server-sent events, and the CSRF header for htmx requests.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const token = document.querySelector('meta[name="csrf-token"]');
  document.body.addEventListener("htmx:configRequest", (event) => {
    if (token) event.detail.headers["X-CSRF-Token"] = token.content;
  });

  // Elements marked data-live="EVENT" take the HTML the server sends for that event.
  const live = document.querySelectorAll("[data-live]");
  if (!live.length || !window.EventSource) return;
  const vm = document.body.dataset.vm;
  const source = new EventSource("/events" + (vm ? "?vm=" + encodeURIComponent(vm) : ""));
  live.forEach((element) => {
    source.addEventListener(element.dataset.live, (event) => {
      element.innerHTML = event.data;  // server-rendered, autoescaped HTML of our own templates
    });
  });
  document.body.dataset.live = "connected";
  source.addEventListener("error", () => { document.body.dataset.live = "retrying"; });
  source.addEventListener("open", () => { document.body.dataset.live = "connected"; });
});
