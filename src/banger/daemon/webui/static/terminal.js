// banger web UI: the page terminal. xterm.js draws; a websocket carries the guest shell's bytes
// both ways (binary frames) and resizes (a JSON text frame). The CSRF token goes in the URL:
// a browser's websocket cannot send a header, and the server also checks Origin and the cookie.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const vm = document.body.dataset.terminal;
  const box = document.getElementById("terminal");
  const status = document.getElementById("term-status");
  const token = document.querySelector('meta[name="csrf-token"]').content;
  if (!vm || !box || !window.Terminal) {
    if (status) status.textContent = "xterm.js is not installed (make install needs npm)";
    return;
  }
  const term = new window.Terminal({ cursorBlink: true, scrollback: 5000, convertEol: false });
  const fit = new window.FitAddon.FitAddon();
  term.loadAddon(fit);
  term.open(box);
  fit.fit();
  const query = new URLSearchParams({ csrf: token, rows: term.rows, cols: term.cols });
  const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host +
    "/vms/" + encodeURIComponent(vm) + "/terminal/ws?" + query.toString();
  const ws = new WebSocket(url);
  ws.binaryType = "arraybuffer";
  const encoder = new TextEncoder();
  ws.addEventListener("open", () => {
    status.textContent = "connected";
    document.body.dataset.terminalState = "open";
    term.focus();
  });
  ws.addEventListener("message", (event) => {
    if (typeof event.data === "string") {  // a control message from the server
      const message = JSON.parse(event.data);
      if (message.type === "error") status.textContent = message.message;
      return;
    }
    term.write(new Uint8Array(event.data));
  });
  ws.addEventListener("close", () => {
    if (document.body.dataset.terminalState === "open") status.textContent = "closed";
    else if (status.textContent === "connecting…") status.textContent = "refused";
    document.body.dataset.terminalState = "closed";
  });
  term.onData((data) => { if (ws.readyState === WebSocket.OPEN) ws.send(encoder.encode(data)); });
  term.onResize(({ rows, cols }) => {
    if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: "resize", rows, cols }));
  });
  window.addEventListener("resize", () => fit.fit());
});
