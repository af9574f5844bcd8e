/* agentguard kill-switch console.
 *
 * Plain browser JavaScript, no build step. Every URL is relative to where the server is
 * mounted. Every string that comes from a user or an agent is put on the page as text
 * (textContent, Text nodes, attributes), never parsed as HTML.
 */
(function () {
  "use strict";

  var API = "api/v1/";
  var SESSION = "kill-switch/session";
  var PROBE = SESSION + "?probe=1"; // 200 {signed_in: false} rather than a 401 the browser logs
  var MAX_REASON = 2000;
  var REFRESH_MS = 5000;
  var FEED_LIMIT = 100;
  var TYPES = { agent: "Agent", run: "Run", mission: "Mission", tool: "Tool" };
  var HEALTH = ["active", "killed", "stale", "crashed", "exited"];

  var state = {
    session: null,
    source: null,
    active: new Map(),
    acks: new Map(),
    agents: null,
    interventions: [],
    capabilities: { agents: false, acks: false },
    syncedAt: null,
    timers: [],
    reconnectTimer: null,
    retry: 0,
    probing: false,
    refreshQueued: false,
    generation: 0,
    openedGeneration: -1, // the session whose stream has opened once already
  };

  // -- small DOM helpers ----------------------------------------------------------------------

  function byId(id) {
    return document.getElementById(id);
  }

  /* el("li", {class: "x", dataset: {...}, onclick: fn}, child, "text", ...) */
  function el(tag, props) {
    var node = document.createElement(tag);
    if (props) {
      Object.keys(props).forEach(function (name) {
        var value = props[name];
        if (value === null || value === undefined || value === false) return;
        if (name === "text") node.textContent = String(value);
        else if (name === "class") node.className = value;
        else if (name === "dataset") Object.assign(node.dataset, value);
        else if (name.slice(0, 2) === "on") node.addEventListener(name.slice(2), value);
        else node.setAttribute(name, value === true ? "" : String(value));
      });
    }
    for (var i = 2; i < arguments.length; i++) {
      var child = arguments[i];
      if (child === null || child === undefined || child === false) continue;
      node.append(child); // strings become Text nodes
    }
    return node;
  }

  function show(node, visible) {
    node.hidden = !visible;
  }

  /* Set a node's text from a string or a (nested) list of strings and nodes. */
  function fill(node, parts) {
    var flat = [];
    (function add(part) {
      if (Array.isArray(part)) part.forEach(add);
      else if (part !== null && part !== undefined && part !== "") flat.push(part);
    })(parts);
    node.replaceChildren.apply(node, flat);
  }

  function setMessage(node, text) {
    fill(node, text);
    show(node, node.textContent !== "");
  }

  function clear(node) {
    node.replaceChildren();
  }

  /* Text from users (ids, reasons, actors) is isolated, so that bidi controls or right-to-left
     letters in it cannot reorder what is around it: dir=auto on its element, or a <bdi> inside
     a sentence (see fill). */
  function userText(tag, className, text) {
    return el(tag, { class: className, dir: "auto", text: text });
  }

  function isolate(text) {
    return el("bdi", { text: text });
  }

  /* The last non-blank line of a reported crash: the exception, not "Traceback (...)". */
  function lastLine(text) {
    var lines = String(text || "")
      .split("\n")
      .map(function (line) {
        return line.trim();
      })
      .filter(Boolean);
    return lines.length ? lines[lines.length - 1] : "";
  }

  var numberFormat = new Intl.NumberFormat(undefined);
  var moneyFormat = new Intl.NumberFormat(undefined, {
    style: "currency",
    currency: "USD",
    maximumFractionDigits: 2,
  });
  var timeFormat = new Intl.DateTimeFormat(undefined, {
    month: "short",
    day: "numeric",
    hour: "2-digit",
    minute: "2-digit",
    second: "2-digit",
  });
  var clockFormat = new Intl.DateTimeFormat(undefined, {
    hour: "2-digit",
    minute: "2-digit",
    second: "2-digit",
  });

  function timeNode(iso) {
    if (!iso) return el("span", { class: "muted", text: "never" });
    var date = new Date(iso);
    if (isNaN(date.getTime())) return el("span", { text: String(iso) });
    var today = new Date().toDateString() === date.toDateString();
    var text = (today ? clockFormat : timeFormat).format(date);
    return el("time", { datetime: iso, title: date.toString(), text: text });
  }

  function targetKey(type, id) {
    return type + "\u0000" + id;
  }

  function typeLabel(type) {
    return TYPES[type] || String(type);
  }

  function targetNode(type, id) {
    return el(
      "span",
      { class: "target" },
      el("span", { class: "type type-" + (TYPES[type] ? type : "other"), text: typeLabel(type) }),
      " ",
      userText("span", "target-id", id)
    );
  }

  function announce(text) {
    var notice = byId("notice");
    fill(notice, text);
    notice.classList.add("visible");
    window.clearTimeout(announce.timer);
    announce.timer = window.setTimeout(function () {
      notice.classList.remove("visible");
    }, 3000);
  }

  // -- HTTP ----------------------------------------------------------------------------------

  function HttpError(status, body) {
    this.status = status;
    this.body = body || {};
    this.message = (body && body.detail) || "HTTP " + status;
  }

  function Unreachable() {
    this.message = "Cannot reach the agentguard server.";
  }

  function call(method, path, body) {
    var headers = { Accept: "application/json" };
    var options = { method: method, headers: headers, credentials: "same-origin", cache: "no-store" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    if (method !== "GET" && state.session && state.session.csrf_token) {
      headers["X-CSRF-Token"] = state.session.csrf_token;
    }
    var generation = state.generation;
    return fetch(path, options).then(
      function (response) {
        if (response.status === 204) return null;
        return response
          .json()
          .catch(function () {
            return null;
          })
          .then(function (data) {
            if (response.ok) return data;
            var error = new HttpError(response.status, data);
            if (response.status === 401 && path !== SESSION && generation === state.generation) {
              sessionEnded(error.message);
            }
            throw error;
          });
      },
      function () {
        if (generation === state.generation && state.session) unreachable();
        throw new Unreachable();
      }
    );
  }

  function query(params) {
    var search = new URLSearchParams();
    Object.keys(params).forEach(function (name) {
      if (params[name] !== "" && params[name] !== null && params[name] !== undefined) {
        search.set(name, params[name]);
      }
    });
    var text = search.toString();
    return text ? "?" + text : "";
  }

  // -- connection state and banners ----------------------------------------------------------

  var CONNECTION_TEXT = {
    connecting: "Connecting…",
    live: "Live",
    reconnecting: "Reconnecting…",
    unreachable: "Server unreachable",
    signedout: "Signed out",
  };

  function setConnection(name) {
    var node = byId("connection");
    node.dataset.state = name;
    node.textContent = CONNECTION_TEXT[name];
  }

  function banner(kind, text) {
    var node = byId("banner");
    node.dataset.kind = kind || "";
    setMessage(node, text);
  }

  function unreachable() {
    setConnection("unreachable");
    var since = state.syncedAt ? " as of " + clockFormat.format(state.syncedAt) : "";
    banner(
      "error",
      "Cannot reach the agentguard server. Showing the last known state" + since + "; retrying."
    );
  }

  function sessionEnded(detail) {
    stop();
    showSignIn();
    banner(
      "warning",
      "Your console session has ended" +
        (detail ? " (" + detail + ")" : "") +
        ". Sign in again to continue."
    );
  }

  /* After a stream error: tell "server down" apart from "signed out". */
  function probe() {
    if (state.probing || !state.session) return;
    state.probing = true;
    var generation = state.generation;
    call("GET", PROBE)
      .then(
        function (session) {
          if (generation !== state.generation) return;
          if (session && session.signed_in === false) {
            sessionEnded(session.detail);
            return;
          }
          state.session = session;
          if (state.source && state.source.readyState === EventSource.CLOSED) connect();
        },
        function (error) {
          if (generation !== state.generation) return;
          if (error instanceof HttpError && error.status === 401) sessionEnded(error.message);
          else scheduleReconnect();
        }
      )
      .then(function () {
        state.probing = false;
      });
  }

  function scheduleReconnect() {
    if (state.reconnectTimer || !state.session) return;
    var delay = Math.min(1000 * Math.pow(2, state.retry), 15000);
    state.retry += 1;
    state.reconnectTimer = window.setTimeout(function () {
      state.reconnectTimer = null;
      if (!state.source || state.source.readyState === EventSource.CLOSED) connect();
      else probe();
    }, delay);
  }

  // -- the change stream ---------------------------------------------------------------------

  function connect() {
    if (state.source) state.source.close();
    var source = new EventSource(API + "kill-switch/stream?include=interventions");
    state.source = source;
    source.addEventListener("open", function () {
      if (state.source !== source) return;
      state.retry = 0;
      setConnection("live");
      if (byId("banner").dataset.kind === "error") banner("", "");
      // Back after a loss: interventions stored meanwhile were not streamed, so read them.
      if (state.openedGeneration === state.generation) loadInterventions(true);
      state.openedGeneration = state.generation;
    });
    source.addEventListener("snapshot", function (event) {
      var data = JSON.parse(event.data);
      state.active = new Map();
      data.active.forEach(function (ks) {
        state.active.set(targetKey(ks.target_type, ks.target_id), ks);
      });
      applied();
    });
    source.addEventListener("kill", function (event) {
      var ks = JSON.parse(event.data).kill_switch;
      state.active.set(targetKey(ks.target_type, ks.target_id), ks);
      applied();
    });
    source.addEventListener("revive", function (event) {
      var ks = JSON.parse(event.data).kill_switch;
      state.active.delete(targetKey(ks.target_type, ks.target_id));
      applied();
    });
    source.addEventListener("intervention", function (event) {
      addInterventions([JSON.parse(event.data)]);
      queueRefresh();
    });
    source.addEventListener("error", function () {
      if (state.source !== source) return;
      setConnection("reconnecting");
      if (source.readyState === EventSource.CLOSED) scheduleReconnect();
      probe();
    });
  }

  function synced() {
    state.syncedAt = new Date();
  }

  /* The stream changed the active kill switches: show them, then what follows from them. */
  function applied() {
    synced();
    renderActive();
    queueRefresh();
  }

  /* Agents, acknowledgements and the audit log are read, not streamed: refresh them soon. */
  function queueRefresh() {
    if (state.refreshQueued) return;
    state.refreshQueued = true;
    window.setTimeout(function () {
      state.refreshQueued = false;
      refresh();
    }, 150);
  }

  function refresh() {
    if (!state.session) return;
    loadAgents();
    loadAcks();
    loadAudit();
  }

  // -- active kill switches ------------------------------------------------------------------

  function sortedActive() {
    return Array.from(state.active.values()).sort(function (a, b) {
      return a.killed_at < b.killed_at ? 1 : a.killed_at > b.killed_at ? -1 : 0;
    });
  }

  function renderActive() {
    var list = byId("active-list");
    var items = sortedActive();
    clear(list);
    items.forEach(function (ks) {
      list.append(activeItem(ks));
    });
    byId("active-count").textContent = String(items.length);
    show(byId("active-empty"), items.length === 0);
    renderAgents();
  }

  function activeItem(ks) {
    var key = targetKey(ks.target_type, ks.target_id);
    var head = el("div", { class: "kill-head" }, targetNode(ks.target_type, ks.target_id));
    if (canKill()) {
      head.append(
        el("button", {
          type: "button",
          class: "button small",
          text: "Revive",
          "aria-label": "Revive " + typeLabel(ks.target_type).toLowerCase() + " " + ks.target_id,
          onclick: function () {
            revive(ks.target_type, ks.target_id);
          },
        })
      );
    }
    var reason = ks.reason
      ? userText("p", "reason", ks.reason)
      : el("p", { class: "reason none", text: "No reason given" });
    var meta = el(
      "p",
      { class: "meta" },
      "Killed by ",
      userText("span", "actor", ks.killed_by),
      " · ",
      timeNode(ks.killed_at)
    );
    var item = el("li", { class: "kill", dataset: { targetType: ks.target_type } }, head, reason, meta);
    var ack = state.acks.get(key);
    if (ack && ack.kill_switch_id === ks.id) item.append(ackNode(ack));
    return item;
  }

  function ackNode(ack) {
    var text;
    var complete = ack.acknowledged >= ack.live;
    if (ack.live === 0) text = "No live instances to acknowledge";
    else text = "Acknowledged by " + ack.acknowledged + "/" + ack.live + (ack.live === 1 ? " instance" : " instances");
    if (ack.live > 0 && complete && typeof ack.slowest_ms === "number") {
      text += " (slowest " + Math.round(ack.slowest_ms) + " ms)";
    }
    return el("p", { class: "ack " + (complete ? "ack-done" : "ack-pending"), text: text });
  }

  function loadAcks() {
    if (!state.capabilities.acks || !state.session) return;
    var generation = state.generation;
    sortedActive()
      .slice(0, 50)
      .forEach(function (ks) {
        var key = targetKey(ks.target_type, ks.target_id);
        call(
          "GET",
          API + "kill-switch/acks" + query({ target_type: ks.target_type, target_id: ks.target_id })
        ).then(
          function (ack) {
            if (generation !== state.generation) return;
            state.acks.set(key, ack);
            if (state.active.has(key)) renderActive();
          },
          function () {
            state.acks.delete(key);
          }
        );
      });
  }

  // -- killing and reviving ------------------------------------------------------------------

  function canKill() {
    return Boolean(state.session && state.session.can_kill);
  }

  function describe(type, id) {
    return [typeLabel(type).toLowerCase() + " \u201c", isolate(id), "\u201d"];
  }

  function kill(type, id, reason) {
    var body = { target_type: type, target_id: id };
    if (reason) body.reason = reason;
    return call("POST", API + "kill-switch/kill", body).then(function (ks) {
      state.active.set(targetKey(ks.target_type, ks.target_id), ks);
      renderActive();
      queueRefresh();
      announce(["Killed ", describe(type, id), "."]);
      return ks;
    });
  }

  function revive(type, id) {
    confirmAction({
      title: ["Revive ", describe(type, id), "?"],
      text:
        "Its instances will be allowed to make tool calls again, and resume from their " +
        "checkpoints.",
      confirm: "Revive",
      danger: false,
    }).then(function (answer) {
      if (!answer) return;
      call("POST", API + "kill-switch/revive", { target_type: type, target_id: id }).then(
        function () {
          state.active.delete(targetKey(type, id));
          renderActive();
          queueRefresh();
          announce(["Revived ", describe(type, id), "."]);
        },
        function (error) {
          if (error instanceof HttpError && error.status === 404) {
            state.active.delete(targetKey(type, id));
            renderActive();
            announce([describe(type, id), " was already revived."]);
          } else if (!(error instanceof HttpError && error.status === 401)) {
            announce(["Could not revive ", describe(type, id), ": " + error.message]);
          }
        }
      );
    });
  }

  function killError(error, type, id) {
    if (error instanceof HttpError) {
      if (error.status === 409) return [typeLabel(type) + " \u201c", isolate(id), "\u201d is already killed."];
      if (error.status === 403) return "Your credential cannot kill: " + error.message;
      return error.message;
    }
    return error.message;
  }

  function setupKillForm() {
    var form = byId("kill-form");
    var reason = byId("kill-reason");
    counter(reason, byId("kill-reason-count"));
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var type = byId("kill-type").value;
      var id = byId("kill-id").value;
      var error = byId("kill-error");
      if (!id.trim()) {
        setMessage(error, "Enter the id of the " + typeLabel(type).toLowerCase() + " to kill.");
        byId("kill-id").focus();
        return;
      }
      setMessage(error, "");
      var text = reason.value;
      confirmAction({
        title: ["Kill ", describe(type, id), "?"],
        text: [
          "Every running instance will refuse its next tool call. ",
          text ? ["Reason: \u201c", isolate(text), "\u201d"] : "No reason given.",
        ],
        confirm: "Kill " + typeLabel(type).toLowerCase(),
        danger: true,
      }).then(function (answer) {
        if (!answer) return;
        kill(type, id, text).then(
          function () {
            form.reset();
            reason.dispatchEvent(new Event("input"));
            byId("kill-id").focus();
          },
          function (failure) {
            setMessage(error, killError(failure, type, id));
          }
        );
      });
    });
  }

  function counter(textarea, output) {
    function update() {
      var used = textarea.value.length;
      output.textContent =
        numberFormat.format(used) + " / " + numberFormat.format(MAX_REASON) + " characters";
      output.classList.toggle("near", used > MAX_REASON * 0.9);
    }
    textarea.addEventListener("input", update);
    update();
  }

  // -- the confirmation dialog ---------------------------------------------------------------

  var pending = null;

  /* Resolves to {reason} when confirmed, to null when cancelled. */
  function confirmAction(options) {
    var dialog = byId("confirm");
    if (pending) pending(null);
    fill(byId("confirm-title"), options.title);
    fill(byId("confirm-text"), options.text);
    var ok = byId("confirm-ok");
    ok.textContent = options.confirm;
    ok.className = "button " + (options.danger ? "danger" : "primary");
    var reasonField = byId("confirm-reason-field");
    var reason = byId("confirm-reason");
    reason.value = "";
    reason.dispatchEvent(new Event("input"));
    show(reasonField, Boolean(options.withReason));
    var opener = document.activeElement;
    return new Promise(function (resolve) {
      pending = function (answer) {
        pending = null;
        if (dialog.open) dialog.close();
        if (opener && opener.isConnected && typeof opener.focus === "function") opener.focus();
        resolve(answer);
      };
      dialog.showModal();
      // Killing is the safe direction: its button takes the focus. Reviving starts on Cancel.
      if (options.withReason) reason.focus();
      else if (options.danger) ok.focus();
      else byId("confirm-cancel").focus();
    });
  }

  function setupDialog() {
    var dialog = byId("confirm");
    byId("confirm-form").addEventListener("submit", function (event) {
      event.preventDefault();
      if (pending) pending({ reason: byId("confirm-reason").value });
    });
    byId("confirm-cancel").addEventListener("click", function () {
      if (pending) pending(null);
    });
    dialog.addEventListener("close", function () {
      if (pending) pending(null);
    });
    dialog.addEventListener("cancel", function () {
      if (pending) pending(null);
    });
    counter(byId("confirm-reason"), byId("confirm-reason-count"));
  }

  // -- agents --------------------------------------------------------------------------------

  function loadAgents() {
    var note = byId("agents-note");
    if (!state.session.can_read) {
      setMessage(note, "Your credential cannot read agent health (it needs the read or operator scope).");
      show(byId("agents-table"), false);
      return;
    }
    if (!state.capabilities.agents) {
      setMessage(
        note,
        "This server does not report agent health. Kill switches above are still enforced."
      );
      show(byId("agents-table"), false);
      return;
    }
    var generation = state.generation;
    call("GET", API + "agents").then(
      function (page) {
        if (generation !== state.generation) return;
        state.agents = page.data;
        renderAgents();
      },
      function (error) {
        if (generation !== state.generation || error instanceof Unreachable) return;
        if (error instanceof HttpError && error.status === 401) return;
        setMessage(note, "Agent health is unavailable: " + error.message);
      }
    );
  }

  function renderAgents() {
    var agents = state.agents;
    if (!agents || !state.session) return;
    var body = byId("agents-body");
    clear(body);
    agents.forEach(function (agent) {
      body.append(agentRow(agent));
    });
    var count = byId("agents-count");
    count.textContent = String(agents.length);
    show(count, true);
    show(byId("agents-table"), agents.length > 0);
    setMessage(
      byId("agents-note"),
      agents.length
        ? ""
        : "No agents have reported yet. Agents appear here once a guard sends heartbeats."
    );
  }

  function agentRow(agent) {
    var killed = state.active.get(targetKey("agent", agent.agent_id));
    var health = agent.health;
    if (killed && health !== "exited" && health !== "crashed") health = "killed";
    var badgeClass = HEALTH.indexOf(health) >= 0 ? health : "unknown";
    var instances = agent.instances || [];
    var live = instances.filter(function (i) {
      return i.health === "active" || i.health === "killed";
    }).length;
    var actions = el("td", { class: "actions", "data-label": "" });
    if (canKill()) {
      if (killed) {
        actions.append(
          el("button", {
            type: "button",
            class: "button small",
            text: "Revive",
            "aria-label": "Revive agent " + agent.agent_id,
            onclick: function () {
              revive("agent", agent.agent_id);
            },
          })
        );
      } else {
        actions.append(
          el("button", {
            type: "button",
            class: "button small danger",
            text: "Kill",
            "aria-label": "Kill agent " + agent.agent_id,
            onclick: function () {
              killAgent(agent.agent_id);
            },
          })
        );
      }
    }
    var refused = Number(agent.refused) || 0;
    return el(
      "tr",
      { dataset: { agent: agent.agent_id } },
      el("th", { scope: "row", class: "agent-id" }, userText("span", "", agent.agent_id)),
      el(
        "td",
        { "data-label": "Health" },
        el("span", { class: "badge health health-" + badgeClass, text: health }),
        crashNode(instances)
      ),
      el("td", {
        class: "num",
        "data-label": "Instances",
        title: live + " live of " + instances.length,
        text: numberFormat.format(instances.length),
      }),
      el("td", {
        class: "num",
        "data-label": "Executed",
        text: numberFormat.format(Number(agent.executed) || 0),
      }),
      el("td", {
        class: "num" + (refused > 0 ? " refused" : ""),
        "data-label": "Refused",
        text: numberFormat.format(refused),
      }),
      el("td", {
        class: "num",
        "data-label": "Cost",
        text: moneyFormat.format(Number(agent.cost_usd) || 0),
      }),
      el("td", { "data-label": "Last seen" }, timeNode(agent.last_seen)),
      actions
    );
  }

  /* A crashed instance's error, by its last line (the whole report in the tooltip). */
  function crashNode(instances) {
    var crashed = instances
      .filter(function (i) {
        return i.status === "crashed" && i.error;
      })
      .sort(function (a, b) {
        return a.last_seen < b.last_seen ? 1 : a.last_seen > b.last_seen ? -1 : 0;
      });
    if (!crashed.length) return null;
    var node = userText("span", "crash-error", lastLine(crashed[0].error));
    node.title = crashed[0].error;
    return node;
  }

  function killAgent(agentId) {
    confirmAction({
      title: ["Kill ", describe("agent", agentId), "?"],
      text: "Every running instance will refuse its next tool call.",
      confirm: "Kill agent",
      danger: true,
      withReason: true,
    }).then(function (answer) {
      if (!answer) return;
      kill("agent", agentId, answer.reason).catch(function (error) {
        if (!(error instanceof HttpError && error.status === 401)) {
          announce(["Could not kill ", describe("agent", agentId), ": ", killError(error, "agent", agentId)]);
        }
      });
    });
  }

  // -- interventions -------------------------------------------------------------------------

  function ivFilter() {
    return { type: byId("iv-type").value, id: byId("iv-target").value.trim() };
  }

  function matches(item, filter) {
    if (filter.type && item.target_type !== filter.type) return false;
    if (filter.id && item.target_id !== filter.id) return false;
    return true;
  }

  /* The latest interventions; `merge` adds them to those shown (after a reconnect). */
  function loadInterventions(merge) {
    var panel = byId("interventions-panel");
    if (!state.session.can_read) {
      setMessage(byId("iv-empty"), "Your credential cannot read interventions (it needs the read or operator scope).");
      byId("iv-filter").hidden = true;
      return;
    }
    panel.dataset.loading = "true";
    var filter = ivFilter();
    var generation = state.generation;
    call(
      "GET",
      API + "interventions" + query({ limit: FEED_LIMIT, target_type: filter.type, target_id: filter.id })
    ).then(
      function (page) {
        if (generation !== state.generation) return;
        var now = ivFilter();
        if (now.type !== filter.type || now.id !== filter.id) return; // a newer filter is loading
        delete panel.dataset.loading;
        if (merge) {
          addInterventions(page.data);
          return;
        }
        state.interventions = page.data;
        renderInterventions();
      },
      function (error) {
        delete panel.dataset.loading;
        if (error instanceof HttpError && error.status !== 401) {
          setMessage(byId("iv-empty"), "Interventions are unavailable: " + error.message);
        }
      }
    );
  }

  function addInterventions(items) {
    if (!state.session || !state.session.can_read) return;
    var filter = ivFilter();
    var known = new Set(
      state.interventions.map(function (i) {
        return i.id;
      })
    );
    items.forEach(function (item) {
      if (matches(item, filter) && !known.has(item.id)) state.interventions.push(item);
    });
    state.interventions.sort(function (a, b) {
      return a.occurred_at < b.occurred_at ? 1 : a.occurred_at > b.occurred_at ? -1 : 0;
    });
    state.interventions = state.interventions.slice(0, FEED_LIMIT * 2);
    renderInterventions();
  }

  function renderInterventions() {
    var list = byId("iv-list");
    clear(list);
    state.interventions.forEach(function (item) {
      var scope = [];
      [
        ["agent", item.agent_id],
        ["run", item.run_id],
        ["mission", item.mission_id],
        ["instance", item.instance_id],
      ].forEach(function (pair) {
        if (!pair[1]) return;
        if (scope.length) scope.push(" \u00b7 ");
        scope.push(pair[0] + " ", userText("span", "scope-id", pair[1]));
      });
      var unavailable = item.type === "UNAVAILABLE"; // refused without a kill: not a block
      list.append(
        el(
          "li",
          { class: "feed-item" },
          el(
            "div",
            { class: "feed-head" },
            el("span", {
              class: unavailable ? "badge unavailable" : "badge block",
              text: item.type === "HARD_BLOCK" ? "Blocked" : unavailable ? "Unavailable" : item.type,
            }),
            " ",
            userText("code", "action", item.action),
            el("span", { class: "muted", text: unavailable ? "refused, no kill state for" : "blocked by" }),
            targetNode(item.target_type, item.target_id),
            el("span", { class: "feed-time" }, timeNode(item.occurred_at))
          ),
          scope.length ? el.apply(null, ["p", { class: "meta" }].concat(scope)) : null,
          item.reason ? userText("p", "reason small", item.reason) : null
        )
      );
    });
    var filter = ivFilter();
    setMessage(
      byId("iv-empty"),
      state.interventions.length
        ? ""
        : filter.type || filter.id
          ? "No interventions match this target."
          : "No interventions yet. A refused tool call of a killed target appears here."
    );
  }

  function setupFilter() {
    var timer = null;
    function changed() {
      window.clearTimeout(timer);
      timer = window.setTimeout(loadInterventions, 250);
    }
    byId("iv-type").addEventListener("change", changed);
    byId("iv-target").addEventListener("input", changed);
    byId("iv-filter").addEventListener("submit", function (event) {
      event.preventDefault();
      window.clearTimeout(timer);
      loadInterventions();
    });
  }

  // -- the audit log -------------------------------------------------------------------------

  var ACTIONS = { kill: "Kill", revive: "Revive", "key.create": "Key created", "key.revoke": "Key revoked" };

  function loadAudit() {
    if (!state.session.can_read) {
      setMessage(byId("audit-empty"), "Your credential cannot read the audit log (it needs the read or operator scope).");
      return;
    }
    var generation = state.generation;
    call("GET", API + "audit" + query({ limit: 50 })).then(
      function (page) {
        if (generation !== state.generation) return;
        renderAudit(page.data);
      },
      function (error) {
        if (error instanceof HttpError && error.status !== 401) {
          setMessage(byId("audit-empty"), "The audit log is unavailable: " + error.message);
        }
      }
    );
  }

  function renderAudit(entries) {
    var list = byId("audit-list");
    clear(list);
    entries.forEach(function (entry) {
      var action = String(entry.action);
      var target =
        entry.target_type && entry.target_id
          ? entry.target_type === "api_key"
            ? userText("code", "", entry.target_id)
            : targetNode(entry.target_type, entry.target_id)
          : null;
      list.append(
        el(
          "li",
          { class: "feed-item" },
          el(
            "div",
            { class: "feed-head" },
            el("span", {
              class: "badge audit-" + action.replace(".", "-"),
              text: ACTIONS[action] || action,
            }),
            " ",
            target,
            el("span", { class: "feed-time" }, timeNode(entry.created_at))
          ),
          el("p", { class: "meta" }, "by ", userText("span", "actor", entry.actor)),
          entry.detail ? userText("p", "reason small", entry.detail) : null
        )
      );
    });
    setMessage(byId("audit-empty"), entries.length ? "" : "No operator actions yet.");
  }

  // -- signing in and out --------------------------------------------------------------------

  function showSignIn() {
    show(byId("console"), false);
    show(byId("identity"), false);
    show(byId("sign-in"), true);
    setConnection("signedout");
    byId("api-key").focus();
  }

  function start(session) {
    state.session = session;
    state.generation += 1;
    banner("", "");
    show(byId("sign-in"), false);
    show(byId("console"), true);
    show(byId("kill-panel"), canKill());
    document.body.classList.toggle("read-only", !canKill());
    var who = [isolate(session.user_id), " · ", isolate(session.organization_id), " · " + session.scopes.join(", ")];
    fill(byId("identity-text"), who);
    byId("identity-text").title = session.actor;
    show(byId("sign-out"), session.method === "console");
    show(byId("identity"), true);
    setConnection("connecting");
    var generation = state.generation;
    call("GET", API + "openapi.json")
      .then(
        function (document_) {
          var paths = (document_ && document_.paths) || {};
          state.capabilities.agents = Boolean(paths["/api/v1/agents"]);
          state.capabilities.acks = Boolean(paths["/api/v1/kill-switch/acks"]);
        },
        function () {}
      )
      .then(function () {
        if (generation !== state.generation) return;
        connect();
        loadInterventions();
        refresh();
        state.timers.push(
          window.setInterval(function () {
            if (!document.hidden) {
              loadAgents();
              loadAcks();
            }
          }, REFRESH_MS)
        );
      });
  }

  function stop() {
    state.generation += 1;
    if (state.source) state.source.close();
    state.source = null;
    state.timers.forEach(window.clearInterval);
    state.timers = [];
    window.clearTimeout(state.reconnectTimer);
    state.reconnectTimer = null;
    state.session = null;
    state.active = new Map();
    state.acks = new Map();
    state.agents = null;
    state.interventions = [];
    state.syncedAt = null;
    state.retry = 0;
    ["active-list", "agents-body", "iv-list", "audit-list"].forEach(function (id) {
      clear(byId(id));
    });
  }

  function setupSignIn() {
    byId("sign-in-form").addEventListener("submit", function (event) {
      event.preventDefault();
      var input = byId("api-key");
      var error = byId("sign-in-error");
      var key = input.value.trim();
      if (!key) {
        setMessage(error, "Paste an API key (it starts with ag_).");
        input.focus();
        return;
      }
      setMessage(error, "");
      call("POST", SESSION, { api_key: key }).then(
        function (session) {
          input.value = "";
          start(session);
        },
        function (failure) {
          if (failure instanceof Unreachable) setMessage(error, failure.message);
          else if (failure.status === 401) setMessage(error, "This API key is not valid or has been revoked.");
          else setMessage(error, failure.message);
          input.focus();
        }
      );
    });
    byId("sign-out").addEventListener("click", function () {
      call("DELETE", SESSION).then(
        function () {
          stop();
          showSignIn();
          announce("Signed out.");
        },
        function (failure) {
          announce("Could not sign out: " + failure.message);
        }
      );
    });
  }

  function boot() {
    setupSignIn();
    setupKillForm();
    setupDialog();
    setupFilter();
    call("GET", PROBE).then(function (session) {
      if (session && session.signed_in === false) showSignIn();
      else start(session);
    }, function (error) {
      if (error instanceof Unreachable) {
        setConnection("unreachable");
        banner("error", "Cannot reach the agentguard server. Reload the page to try again.");
      }
      showSignIn();
    });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", boot);
  else boot();
})();
