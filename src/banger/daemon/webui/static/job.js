// banger web UI: one operation's live progress over server-sent events; once it is done the
// page goes where the operation leads (a created VM's page), or stays to show the error.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const op = document.body.dataset.job;
  const box = document.getElementById("job");
  if (!op || !box || !window.EventSource) return;
  const source = new EventSource("/ops/" + encodeURIComponent(op) + "/events");
  source.addEventListener("progress", (event) => {
    box.innerHTML = event.data;  // server-rendered, autoescaped HTML of our own template
  });
  source.addEventListener("finished", (event) => {
    source.close();
    const result = JSON.parse(event.data);
    document.getElementById("cancel-form").hidden = true;
    document.body.dataset.jobState = result.state;
    if (result.state === "done" && result.url && result.url.startsWith("/")) {
      location.assign(result.url);
    }
  });
});
