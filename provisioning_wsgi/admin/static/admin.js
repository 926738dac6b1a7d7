// The bootstrap page: this browser calls the phone's web interface (the server cannot reach
// a phone on the customer's network), then polls the server until the phone fetched its config.
"use strict";

(function () {
  const form = document.getElementById("push-form");
  if (!form) {
    return;
  }
  const statusLine = document.getElementById("push-status");
  const list = document.getElementById("push-fetches");
  const push = form.dataset;
  const POLL_MS = 1500;
  const GIVE_UP_MS = 5 * 60 * 1000;
  // An IPv4 address, [an IPv6 address] or a host name (its last label not a number, which
  // URLs would read as an IPv4 address), with an optional port: nothing that could change
  // which URL is opened.
  const ADDRESS = new RegExp(
    "^(?:(?:25[0-5]|2[0-4]\\d|1?\\d?\\d)(?:\\.(?:25[0-5]|2[0-4]\\d|1?\\d?\\d)){3}" +
    "|\\[[0-9A-Fa-f:.]+\\]" +
    "|(?:[A-Za-z0-9][A-Za-z0-9-]{0,62}\\.)*[A-Za-z][A-Za-z0-9-]{0,62})" +
    "(?::\\d{1,5})?$");
  let after = Number(push.after);
  let timer = null;
  let deadline = 0;

  function say(text, state) {
    statusLine.textContent = text;
    statusLine.dataset.state = state;
  }

  // A navigation, not fetch(): an https page may open an http URL but not fetch from one,
  // and the person sees the phone's answer (or its password prompt) in that tab.
  function callPhone(address) {
    const url = push.url.replace("{phone}", address);
    if (push.method === "GET") {
      window.open(push.query ? url + "?" + push.query : url, "_blank", "noopener,noreferrer");
      return;
    }
    const post = document.createElement("form");
    post.method = "post";
    post.action = url;
    post.target = "_blank";
    post.rel = "noopener noreferrer";
    for (const [name, value] of JSON.parse(push.fields)) {
      const input = document.createElement("input");
      input.type = "hidden";
      input.name = name;
      input.value = value;
      post.appendChild(input);
    }
    document.body.appendChild(post);
    post.submit();
    post.remove();
  }

  function show(fetch) {
    const item = document.createElement("li");
    const over = fetch.port === "tls" ? "TLS (full config)" : "plain HTTP (bootstrap file)";
    item.textContent = fetch.when + ": " + fetch.file + " over " + over +
      (fetch.client_addr ? " from " + fetch.client_addr : "");
    item.className = "fetch-" + fetch.port;
    list.appendChild(item);
  }

  async function poll() {
    timer = null;
    try {
      const reply = await fetch(push.poll + "&after=" + after,
                                { credentials: "same-origin", cache: "no-store" });
      if (!reply.ok) {
        throw new Error("the server answered " + reply.status);
      }
      const data = await reply.json();
      for (const fetched of data.fetches) {
        after = Math.max(after, fetched.id);
        show(fetched);
        if (fetched.port === "tls") {
          say("The phone fetched its configuration (" + fetched.file + " over TLS, " +
              fetched.when + "). From now on a resync reaches it by SIP.", "done");
          return;
        }
        say("The phone fetched the bootstrap file; waiting for it to fetch its full " +
            "configuration over TLS…", "waiting");
      }
    } catch (error) {
      say("Could not ask the server (" + error.message + "); trying again…", "waiting");
    }
    if (Date.now() > deadline) {
      say("No configuration fetch after 5 minutes. Check the address, and whether the " +
          "phone asked for its admin password in the other tab; then send again.", "failed");
      return;
    }
    timer = window.setTimeout(poll, POLL_MS);
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    const address = form.elements.namedItem("phone").value.trim();
    if (!ADDRESS.test(address)) {
      say("That is not an IP address (e.g. 192.168.1.23) or a host name.", "failed");
      return;
    }
    try {
      callPhone(address);
    } catch (error) {
      say("Could not open the phone's page (" + error.message + ").", "failed");
      return;
    }
    say("Sent to the phone at " + address + ". Waiting for it to fetch its configuration…",
        "waiting");
    deadline = Date.now() + GIVE_UP_MS;
    if (timer === null) {
      timer = window.setTimeout(poll, POLL_MS);
    }
  });
  document.getElementById("push").disabled = false;
})();

// The import page: a spreadsheet file chosen here is read into the form's text box (the form
// stays a plain urlencoded post carrying the CSRF token; the operator sees what is sent).
(function () {
  const picker = document.getElementById("csv-file");
  const box = document.getElementById("csv");
  if (!picker || !box) {
    return;
  }
  picker.addEventListener("change", function () {
    const file = picker.files && picker.files[0];
    if (file) {
      file.text().then(function (text) {
        box.value = text.replace(/^\uFEFF/, "");
      });
    }
  });
})();
