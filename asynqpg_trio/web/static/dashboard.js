// asynqpg dashboard: live refresh (fetch the page, swap <main id="live">) and the action
// buttons (JSON API calls with the CSRF token).  No build step, no dependencies.
(function () {
  "use strict";
  const body = document.body;
  const refreshMs = Number(body.dataset.refreshMs || 0);
  let busy = false;

  function csrfToken() {
    const meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.content : "";
  }

  function flash(text, isError) {
    const box = document.getElementById("flash");
    if (!box) return;
    box.textContent = text;
    box.className = isError ? "error" : "ok";
    box.hidden = false;
  }

  // Times: "3 min ago" / "in 2 h" next to now, the absolute UTC time on hover (title).
  function relative(ms) {
    const past = ms >= 0;
    let s = Math.abs(ms) / 1000;
    let text;
    if (s < 5) return past ? "just now" : "in a moment";
    if (s < 60) text = Math.round(s) + " s";
    else if (s < 3600) text = Math.round(s / 60) + " min";
    else if (s < 86400) text = Math.round(s / 3600) + " h";
    else text = Math.round(s / 86400) + " d";
    return past ? text + " ago" : "in " + text;
  }

  function humanize(root) {
    const now = Date.now();
    root.querySelectorAll("time[datetime]").forEach(function (el) {
      const at = Date.parse(el.getAttribute("datetime"));
      if (isNaN(at)) return;
      if (!el.title) el.title = new Date(at).toISOString().replace("T", " ").slice(0, 19) + " UTC";
      el.textContent = relative(now - at);
    });
  }

  humanize(document);
  window.setInterval(function () { humanize(document); }, 15000);

  async function refresh() {
    const live = document.getElementById("live");
    if (!live || busy) return;
    busy = true;
    try {
      const response = await fetch(location.href, {
        credentials: "same-origin",
        headers: { Accept: "text/html" },
        cache: "no-store",
      });
      const doc = new DOMParser().parseFromString(await response.text(), "text/html");
      const fresh = doc.getElementById("live");
      if ((!response.ok && response.status !== 400) || !fresh || doc.body.dataset.page !== body.dataset.page) {
        location.reload();
        return;
      }
      live.innerHTML = fresh.innerHTML;
      humanize(live);
      const token = doc.querySelector('meta[name="csrf-token"]');
      const mine = document.querySelector('meta[name="csrf-token"]');
      if (token && mine) mine.content = token.content;
      body.dataset.refreshed = String(Date.now());
    } catch (err) {
      // Network hiccup: keep the page as it is and try again at the next tick.
    } finally {
      busy = false;
    }
  }

  async function call(url, method, payload) {
    const init = {
      method: method,
      credentials: "same-origin",
      headers: { "X-CSRF-Token": csrfToken(), Accept: "application/json" },
    };
    if (payload) {
      init.headers["Content-Type"] = "application/json";
      init.body = payload;
    }
    const response = await fetch(url, init);
    let data = null;
    try {
      data = await response.json();
    } catch (err) {
      data = null;
    }
    if (!response.ok || !data || data.error) {
      const message = data && data.error ? data.error.message : "HTTP " + response.status;
      throw new Error(message);
    }
    return data.data;
  }

  document.addEventListener("click", async function (event) {
    const button = event.target.closest("button[data-url], button[data-logout], button[data-reveal]");
    if (!button) return;
    event.preventDefault();
    if (button.dataset.reveal) {
      const pre = button.nextElementSibling;
      try {
        const response = await fetch(button.dataset.reveal, { credentials: "same-origin" });
        if (!response.ok) {
          let message = "HTTP " + response.status;
          try {
            const data = await response.json();
            if (data && data.error) message = data.error.message;
          } catch (err) {
            // Not the JSON envelope: keep the status.
          }
          throw new Error(message);
        }
        pre.textContent = await response.text();
        pre.hidden = false;
        button.hidden = true;
      } catch (err) {
        flash("Could not load the payload: " + err.message, true);
      }
      return;
    }
    if (button.dataset.logout) {
      try {
        await call(button.dataset.logout, "POST");
      } catch (err) {
        // The session is gone either way.
      }
      location.assign(body.dataset.base + "/login");
      return;
    }
    if (button.dataset.confirm && !window.confirm(button.dataset.confirm)) return;
    button.disabled = true;
    try {
      const result = await call(button.dataset.url, button.dataset.method || "POST", button.dataset.body);
      let done = button.dataset.done || "Done";
      if (result && typeof result.affected === "number") {
        done = done.replace("{affected}", String(result.affected));
      }
      flash(done, false);
      if (button.dataset.then) {
        location.assign(button.dataset.then);
        return;
      }
      await refresh();
    } catch (err) {
      flash(err.message, true);
      button.disabled = false;
    }
  });

  if (refreshMs > 0 && body.dataset.page !== "login") {
    window.setInterval(function () {
      if (!document.hidden) refresh();
    }, refreshMs);
  }
})();
