/* Shoal's web UI: plain JavaScript, no framework, no build step. Every change goes through the
   REST API (/api/v1) with the session cookie and the page's CSRF token; the cluster page follows
   an operation through the API's server-sent events. */
"use strict";
(function () {
  const csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";

  async function api(method, path, body, type) {
    const headers = {"X-CSRF-Token": csrf};
    let payload;
    if (body instanceof Blob) {
      headers["Content-Type"] = type || "application/octet-stream";
      payload = body;
    } else if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      payload = JSON.stringify(body);
    }
    const response = await fetch("/api/v1" + path, {method, headers, body: payload,
                                                     credentials: "same-origin"});
    const text = await response.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
    if (!response.ok) {
      const error = (data && data.error) || {};
      const err = new Error(error.message || response.status + " " + response.statusText);
      err.status = response.status;
      err.details = error.details || {};
      throw err;
    }
    return data;
  }

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (key === "text") node.textContent = value;
      else if (key === "class") node.className = value;
      else node.setAttribute(key, value);
    }
    for (const child of children) node.append(child);
    return node;
  }

  function clearErrors(scope) {
    scope.querySelectorAll(".field-error, .form-error").forEach((slot) => {
      slot.textContent = "";
      slot.classList.remove("shown");
    });
  }

  /* The API's details.field names the field at fault ("size", "body.services[1]",
     "provisioner.actions.install.type"): the message goes into the slot for that field, or the
     nearest one up its path, or the form's own slot. */
  function showError(scope, err, fallback) {
    let field = ((err.details && err.details.field) || "").replace(/^body\.?/, "");
    let slot = null;
    while (field) {
      slot = scope.querySelector('[data-field="' + CSS.escape(field) + '"]');
      const shorter = field.replace(/(\.[^.\[]*|\[\d+\])$/, "");
      if (slot || shorter === field) break;
      field = shorter;
    }
    slot = slot || fallback || scope.querySelector(".form-error");
    slot.textContent = err.message;
    slot.classList.add("shown");
    return slot;
  }

  function jsonField(form, name) {
    const text = (form.elements[name].value || "").trim();
    if (!text) return undefined;
    try { return JSON.parse(text); } catch (e) {
      const err = new Error(name + ": not valid JSON (" + e.message + ")");
      err.details = {field: name, reason: "not JSON"};
      throw err;
    }
  }

  function groupsTable(groups) {
    const body = el("tbody");
    for (const g of groups) {
      body.append(el("tr", {}, el("td", {text: g.count}), el("td", {text: g.services.join(", ")}),
                     el("td", {text: g.hardwaretype}), el("td", {text: g.imagetype}),
                     el("td", {text: g.cost})));
    }
    return body;
  }

  // -- template page: plan, then create --------------------------------------------------------

  function templatePage() {
    const form = document.getElementById("plan-form");
    const create = document.getElementById("create-button");
    const result = document.getElementById("plan-result");

    function request(creating) {
      const data = {template: form.dataset.template, size: Number(form.elements.size.value)};
      const name = form.elements.name.value.trim();
      if (name) data.name = name;
      const services = [...form.querySelectorAll('input[name="services"]:checked')]
        .map((box) => box.value);
      if (services.length) data.services = services;
      for (const key of ["hardwaretype", "imagetype"]) {
        if (form.elements[key].value) data[key] = form.elements[key].value;
      }
      const config = jsonField(form, "config");
      if (config !== undefined) data.config = config;
      // Only where the template has leases, and only on create (a plan takes none): the API
      // checks it against the template's terms.
      if (creating && form.elements.lease && form.elements.lease.value.trim()) {
        data.lease = form.elements.lease.value.trim();
      }
      return data;
    }

    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      clearErrors(form);
      create.disabled = true;
      result.hidden = true;
      try {
        const plan = await api("POST", "/clusters/plan", request());
        const table = document.getElementById("plan-groups");
        table.replaceChild(groupsTable(plan.groups), table.tBodies[0]);
        document.getElementById("plan-cost").textContent = plan.layout.cost;
        document.getElementById("plan-tasks").textContent = plan.summary.tasks;
        result.hidden = false;
        create.disabled = false;
      } catch (err) {
        showError(form, err);
      }
    });

    create.addEventListener("click", async () => {
      clearErrors(form);
      try {
        const data = request(true);
        if (!data.name) {
          const err = new Error("a cluster needs a name");
          err.details = {field: "name"};
          throw err;
        }
        await api("POST", "/clusters", data);
        window.location.assign("/ui/clusters/" + encodeURIComponent(data.name));
      } catch (err) {
        showError(form, err);
      }
    });
  }

  // -- cluster page: live progress, operations ---------------------------------------------------

  const FINAL = ["SUCCEEDED", "FAILED", "CANCELLED"];
  const TASK_ROWS = 300;

  function clusterPage() {
    const root = document.getElementById("cluster");
    const name = root.dataset.name;
    const path = "/clusters/" + encodeURIComponent(name);
    let since = root.dataset.since;
    let after = root.dataset.after;
    let opId = root.dataset.op || null;  // the operation whose tasks the table shows
    let source = null;
    const taskRows = new Map();
    document.querySelectorAll("#tasks tbody tr").forEach((tr) => taskRows.set(tr.dataset.task, tr));

    function setStatus(node, status) {
      node.textContent = status;
      node.className = node.className.replace(/\bs-\S*/g, "").trim() + " s-" + status;
    }

    function progress(p) {
      since = p.at;
      setStatus(document.getElementById("cluster-status"), p.cluster_status);
      const op = p.operation;
      if (!op) return;
      if (opId && op.id !== opId) reloadTasks();
      opId = op.id;
      const counts = op.counts || {};
      const done = (counts.SUCCEEDED || 0) + (counts.SKIPPED || 0);
      document.getElementById("op-kind").textContent = op.kind;
      setStatus(document.getElementById("op-status"), op.status);
      const bar = document.getElementById("op-bar");
      bar.max = op.total || 1;
      bar.value = done;
      document.getElementById("op-done").textContent = done;
      document.getElementById("op-total").textContent = op.total;
      document.getElementById("op-running-count").textContent = counts.RUNNING || 0;
      document.getElementById("op-failed").textContent = counts.FAILED || 0;
      document.getElementById("op-error").textContent = op.error || "";
      document.getElementById("op-running").replaceChildren(
        ...op.running.map((r) => el("li", {text: r})));
    }

    function taskRow(t) {
      const tr = el("tr", {"data-task": t.id},
                    el("td", {text: t.action + " " + (t.service || "") + " on " + t.node}),
                    el("td", {class: "s-" + t.status, text: t.status}),
                    el("td", {text: t.attempts}),
                    el("td", {text: t.duration == null ? "" : t.duration}),
                    el("td", {}, el("code", {text: (t.tail || t.output || "").slice(-200)})));
      return tr;
    }

    function tasks(rows) {
      const body = document.querySelector("#tasks tbody");
      for (const t of rows) {
        const old = taskRows.get(t.id);
        if (old) {
          const fresh = taskRow(t);
          old.replaceWith(fresh);
          taskRows.set(t.id, fresh);
        } else if (taskRows.size < TASK_ROWS || t.status === "RUNNING" || t.status === "FAILED") {
          const fresh = taskRow(t);
          body.prepend(fresh);
          taskRows.set(t.id, fresh);
        }
      }
      while (taskRows.size > TASK_ROWS) {
        const last = body.lastElementChild;
        taskRows.delete(last.dataset.task);
        last.remove();
      }
    }

    async function reloadTasks() {
      // As the server renders it: failed, running, then the first ones in plan order.
      const parts = await Promise.all(["?status=FAILED", "?status=RUNNING",
                                       "?limit=" + TASK_ROWS].map((q) => api("GET", path + "/tasks" + q)));
      const body = document.querySelector("#tasks tbody");
      body.replaceChildren();
      taskRows.clear();
      for (const t of parts.flat()) {
        if (t.action === "JOIN" || taskRows.has(t.id) || taskRows.size >= TASK_ROWS) continue;
        const tr = taskRow(t);
        body.append(tr);
        taskRows.set(t.id, tr);
      }
    }

    let refreshing = null;
    function nodes(rows) {
      for (const n of rows) {
        const tr = document.getElementById("n-" + n.id);
        if (!tr) {
          if (n.status !== "DELETED") refreshCluster();
          continue;
        }
        if (n.status === "DELETED") tr.remove();
        else setStatus(tr.lastElementChild, n.status);
      }
    }

    function metrics(m) {
      if (!m || !Object.keys(m).length) return "";
      const v = (k, unit) => (k in m ? m[k] + unit : "–");
      return v("load1", "") + " · " + v("memory_pct", "%") + " · " + v("disk_pct", "%");
    }

    function refreshCluster() {
      if (refreshing) return refreshing;
      refreshing = api("GET", path).then((c) => {
        const body = document.querySelector("#nodes tbody");
        body.replaceChildren(...c.nodes.map((n) => el("tr", {id: "n-" + n.id},
          el("td", {text: n.id}), el("td", {text: n.hostname}), el("td", {text: n.address}),
          el("td", {text: n.hardwaretype}), el("td", {text: n.imagetype}),
          el("td", {text: n.services.join(", ")}), el("td", {text: metrics(n.metrics)}),
          el("td", {class: "s-" + n.status, text: n.status}))));
        document.getElementById("size").textContent = c.size;
        document.getElementById("cost").textContent = c.cost;
        let links = document.getElementById("links");
        if (c.links.length) {
          if (!links) {
            links = el("ul", {class: "links", id: "links"});
            document.getElementById("operation").before(links);
          }
          links.replaceChildren(...c.links.map((l) => el("li", {},
            el("a", {href: l.url, target: "_blank", rel: "noopener noreferrer",
                     text: l.label || l.url}), " ", el("code", {text: l.url}))));
        }
      }).catch(() => {}).finally(() => { refreshing = null; });
      return refreshing;
    }

    function log(rows) {
      const list = document.getElementById("events");
      for (const e of rows) {
        const at = new Date(e.at * 1000).toTimeString().slice(0, 8);
        list.append(el("li", {"data-id": e.id}, el("time", {text: at}), " " + e.message));
        after = e.id;
      }
    }

    const state = document.getElementById("live-state");
    function connect() {
      if (source) source.close();
      const query = "?since=" + Number(since).toFixed(6) + "&after=" + after;
      source = new EventSource("/api/v1" + path + "/stream" + query);
      state.textContent = "live";
      source.addEventListener("progress", (e) => progress(JSON.parse(e.data)));
      source.addEventListener("tasks", (e) => tasks(JSON.parse(e.data)));
      source.addEventListener("nodes", (e) => nodes(JSON.parse(e.data)));
      source.addEventListener("log", (e) => log(JSON.parse(e.data)));
      source.addEventListener("end", () => {
        source.close();
        source = null;
        state.textContent = "";
        refreshCluster();
      });
      source.onerror = () => {
        // The stream ends after a while (it holds a server thread): open it again from where
        // it was, with the newest time and event seen - unless the session has ended (its
        // token revoked, expired or deleted, or a logout elsewhere): then say so and stop.
        if (source) source.close();
        source = null;
        state.textContent = "reconnecting";
        api("GET", "/whoami").then(() => setTimeout(connect, 500), (err) => {
          if (err.status === 401) {
            state.textContent = err.message;  // "this browser session has ended: ..."
            state.classList.add("error");
          } else {
            setTimeout(connect, 500);
          }
        });
      };
    }
    root.live = connect;

    // Drift: compare with the provider now (the API's check), then show the page anew.
    const check = document.getElementById("check-drift");
    // The nodes that drifted ("ok" ones are compared and fine; a report may drift by orphans).
    const off = (nodes) => {
      const drifted = nodes.filter((n) => n.state !== "ok");
      return drifted.length ? " on " + drifted.map((n) => n.node + " (" + n.state + ")")
        .join(", ") : "";
    };
    if (check) {
      check.addEventListener("click", async () => {
        const error = document.getElementById("drift-error");
        error.textContent = "";
        check.disabled = true;
        try {
          const report = await api("POST", path + "/check", {});
          document.getElementById("drift-line").firstChild.textContent =
            "Drift check just now: " + (report.drifted ? "drift found" : "no drift") +
            (report.drifted ? off(report.nodes) : " (" + report.nodes.length + " nodes compared)") +
            (report.orphans.length ? "; " + report.orphans.length + " orphan(s)" : "") + ". ";
        } catch (err) {
          error.textContent = err.message;
        } finally {
          check.disabled = false;
        }
      });
    }
    if (root.dataset.running === "1") connect();

    // The lease: extend it through the API, which says why not (step, max, no lease).
    const extend = document.getElementById("extend-form");
    if (extend) {
      extend.addEventListener("submit", async (event) => {
        event.preventDefault();
        const error = document.getElementById("extend-error");
        error.textContent = "";
        error.classList.remove("shown");
        try {
          const lease = await api("POST", path + "/extend", {by: extend.elements.by.value.trim()});
          document.getElementById("expires").textContent = lease.expires + " (extended)";
        } catch (err) {
          error.textContent = err.message;
          error.classList.add("shown");
        }
      });
    }

    // Every operation: plan it, show the plan, confirm, run, follow.
    const panel = document.getElementById("confirm");
    const actionError = document.getElementById("action-error");
    let pending = null;

    function body(form, verb) {
      const data = {};
      if (verb === "resize") data.size = Number(form.elements.size.value);
      if (form.elements.services) {
        data.services = [...form.elements.services.selectedOptions].map((o) => o.value);
      }
      if (verb === "reconfigure") {
        const config = jsonField(form, "config");
        if (config !== undefined) data.config = config;
        data.restart = form.elements.restart.checked;
      }
      return data;
    }

    function describe(plan) {
      const parts = [];
      const tasksCount = plan.tasks.filter((t) => t.action !== "JOIN").length;
      const touched = new Set(plan.tasks.map((t) => t.node).filter(Boolean));
      if (plan.layout) {
        const l = plan.layout;
        const before = Number(document.getElementById("size").textContent);
        const creates = plan.tasks.filter((t) => t.action === "CREATE").length;
        parts.push(el("p", {id: "plan-summary", text:
          "Nodes: " + before + " → " + l.nodes.length + " (added " + creates + ", removed " +
          l.removed.length + ", changed " + l.changed.length + ") · cost after: " + l.cost}));
        const table = el("table", {id: "confirm-groups"}, el("thead", {}, el("tr", {},
          ...["Nodes", "Services", "Hardware", "Image", "Cost"].map((h) => el("th", {text: h})))));
        table.append(groupsTable(plan.groups || []));
        parts.push(table);
      }
      parts.push(el("p", {id: "plan-task-count", text: tasksCount + " tasks on " + touched.size +
                          " nodes: " + [...touched].slice(0, 20).join(", ") +
                          (touched.size > 20 ? " …" : "")}));
      const work = plan.tasks.filter((t) => t.action !== "JOIN");
      parts.push(el("ul", {id: "plan-task-list"}, ...work.slice(0, 12).map((t) =>
        el("li", {text: t.action + (t.service ? " " + t.service : "") + " on " + t.node}))));
      if (work.length > 12) parts.push(el("p", {text: "… and " + (work.length - 12) + " more"}));
      return parts;
    }

    function ask(title, parts, run) {
      document.getElementById("confirm-title").textContent = title;
      document.getElementById("confirm-plan").replaceChildren(...parts);
      panel.hidden = false;
      pending = run;
      document.getElementById("confirm-yes").focus();
    }

    document.getElementById("confirm-no").addEventListener("click", () => {
      panel.hidden = true;
      pending = null;
    });
    document.getElementById("confirm-yes").addEventListener("click", async () => {
      const run = pending;
      panel.hidden = true;
      pending = null;
      actionError.textContent = "";
      try {
        await run();
        connect();
      } catch (err) {
        showError(document.getElementById("actions"), err, actionError);
      }
    });

    document.querySelectorAll(".op-form").forEach((form) => {
      form.addEventListener("submit", async (event) => {
        event.preventDefault();
        const verb = form.dataset.verb;
        actionError.textContent = "";
        try {
          const data = body(form, verb);
          // ?full=1: the confirmation lists the plan's tasks and the nodes they touch.
          const plan = await api("POST", path + "/plan?full=1",
                                 Object.assign({operation: verb}, data));
          ask("Run " + verb + " on " + name + "?", describe(plan), () =>
            verb === "delete" ? api("DELETE", path) : api("POST", path + "/" + verb, data));
        } catch (err) {
          showError(form, err, actionError);
        }
      });
    });
    // Drift repair and orphans, as `shoal cluster check --repair / --delete-orphans`: the same
    // API call, first as a plan (dry run, or the check's list of orphans), run once confirmed.
    const checkPath = path + "/check";
    function driftError(err) {
      const error = document.getElementById("drift-error");
      error.textContent = err.message;
      error.classList.add("shown");
    }
    function clearDriftError() {
      const error = document.getElementById("drift-error");
      error.textContent = "";
      error.classList.remove("shown");
    }
    const repair = document.getElementById("repair-plan");
    if (repair) {
      repair.addEventListener("click", async () => {
        clearDriftError();
        try {
          const report = await api("POST", checkPath, {repair: true, dry_run: true});
          const broken = report.nodes.filter((n) => n.state === "missing" || n.state === "stopped");
          const work = report.repair.tasks.filter((t) => t.action !== "JOIN");
          const others = [...new Set(work.map((t) => t.node))]
            .filter((node) => node && !broken.some((n) => n.node === node));
          ask("Repair " + name + "?", [
            el("p", {id: "repair-summary", text: "Replaces " + broken.map((n) => n.node + " (" +
              n.state + ")").join(", ") + " in " + work.length + " tasks" +
              (others.length ? "; also reconfigures " + others.join(", ") : "") + "."}),
            el("ul", {id: "plan-task-list"}, ...work.slice(0, 20).map((t) =>
              el("li", {text: t.action + (t.service ? " " + t.service : "") + " on " + t.node}))),
          ], async () => {
            const result = await api("POST", checkPath, {repair: true});
            if (!result.repair || !result.repair.operation) {
              throw new Error("nothing to repair any more");
            }
          });
        } catch (err) {
          driftError(err);
        }
      });
    }
    const orphans = document.getElementById("orphans-plan");
    if (orphans) {
      orphans.addEventListener("click", async () => {
        clearDriftError();
        try {
          const report = await api("POST", checkPath, {});
          if (!report.orphans.length) throw new Error("no orphans: every resource labelled " +
                                                      "with " + name + " is one of its nodes");
          ask("Delete " + report.orphans.length + " orphan(s) of " + name + "?", [
            el("ul", {id: "orphan-list"}, ...report.orphans.map((o) => el("li", {text:
              o.resource_id + " (" + o.state + (o.node ? ", node " + o.node : "") +
              (o.address ? ", " + o.address : "") + ")"}))),
            el("p", {text: "They hold no node of the cluster; deleting them cannot be undone."}),
          ], async () => {
            const result = await api("POST", checkPath, {delete_orphans: true});
            document.getElementById("drift-line").firstChild.textContent =
              "Deleted orphan(s): " + (result.deleted_orphans || []).join(", ") + ". ";
          });
        } catch (err) {
          driftError(err);
        }
      });
    }

    document.querySelectorAll(".control-form").forEach((form) => {
      form.addEventListener("submit", (event) => {
        event.preventDefault();
        const verb = form.dataset.verb;
        ask(verb[0].toUpperCase() + verb.slice(1) + " the operation of " + name + "?",
            [el("p", {text: verb === "cancel" ? "A cancelled create rolls back what it made."
                                               : ""})],
            () => api("POST", path + "/" + verb));
      });
    });
  }

  // -- admin: catalog entity editor --------------------------------------------------------------

  function getPath(obj, dotted) {
    return dotted.split(".").reduce((o, k) => (o && typeof o === "object" ? o[k] : undefined), obj);
  }

  function setPath(obj, dotted, value) {
    const keys = dotted.split(".");
    let o = obj;
    for (const k of keys.slice(0, -1)) {
      if (!o[k] || typeof o[k] !== "object") o[k] = {};
      o = o[k];
    }
    if (value === "") delete o[keys[keys.length - 1]];
    else o[keys[keys.length - 1]] = value;
  }

  function warningsList(list, warnings) {
    list.replaceChildren(...(warnings || []).map((w) => el("li", {text: "warning: " + w.message})));
  }

  /* The editor holds the entity as JSON or as YAML (js-yaml, loaded by this page only); the API
     takes JSON alone, so YAML is turned into JSON here before anything is sent. The YAML 1.2
     core schema: no dates or other types that JSON has not, so what is read is what is sent. */
  function yamlLib() {
    return window.jsyaml || null;
  }

  function parseEditor(text, format) {
    text = text.trim();
    if (!text) return {};
    let body;
    if (format === "yaml") {
      const yaml = yamlLib();
      try {
        body = yaml.load(text, {schema: yaml.CORE_SCHEMA});
      } catch (e) {
        const mark = e.mark || {};
        const at = mark.line === undefined ? "" : " at line " + (mark.line + 1) + ", column " +
          (mark.column + 1);
        const err = new Error("YAML syntax error" + at + ": " + (e.reason || e.message) +
                              " (nothing was sent)");
        err.details = {field: "json", reason: "not YAML", line: mark.line + 1};
        throw err;
      }
      if (body === null || body === undefined) return {};
    } else {
      try { body = JSON.parse(text); } catch (e) {
        const err = new Error("not valid JSON (" + e.message + "; nothing was sent)");
        err.details = {field: "json", reason: "not JSON"};
        throw err;
      }
    }
    if (typeof body !== "object" || body === null || Array.isArray(body)) {
      const err = new Error("the " + format.toUpperCase() + " must be an object (a mapping)");
      err.details = {field: "json", reason: "not an object"};
      throw err;
    }
    return body;
  }

  function formatEditor(body, format) {
    if (format === "yaml") {
      const yaml = yamlLib();
      return yaml.dump(body, {schema: yaml.CORE_SCHEMA, noRefs: true, lineWidth: -1,
                              sortKeys: false});
    }
    return JSON.stringify(body, null, 2);
  }

  function entityPage() {
    const form = document.getElementById("entity-form");
    const editor = form.elements.json;
    const fields = [...form.querySelectorAll("input[name]")]
      .filter((i) => i.type !== "file" && i.type !== "radio");
    const plural = form.dataset.plural;
    const existing = form.dataset.name;
    const jsonError = document.getElementById("json-error");
    let format = "json";
    form.dataset.format = format;

    function fillFields() {
      try {
        const body = parseEditor(editor.value, format);
        for (const input of fields) {
          const value = getPath(body, input.name);
          input.value = value == null ? "" : value;
        }
      } catch (e) { /* the editor holds what the user typed; it is refused on save */ }
    }
    fillFields();
    editor.addEventListener("change", fillFields);

    // The form's fields win over the editor's text for their keys (an emptied field drops it).
    function withFields(body) {
      for (const input of fields) {
        if (input.value !== "" || getPath(body, input.name) !== undefined) {
          setPath(body, input.name, input.value);
        }
      }
      return body;
    }

    // JSON <-> YAML: the text is read in the format it is in and written in the other; a text
    // that does not read stays as it is, with the reason beside it.
    const yamlChoice = document.getElementById("e-format-yaml");
    if (!yamlLib()) yamlChoice.disabled = true;
    form.querySelectorAll('input[name="format"]').forEach((choice) => {
      choice.addEventListener("change", () => {
        if (!choice.checked || choice.value === format) return;
        clearErrors(form);
        try {
          const body = withFields(parseEditor(editor.value, format));
          format = choice.value;
          form.dataset.format = format;
          editor.value = formatEditor(body, format);
        } catch (err) {
          form.querySelector('input[name="format"][value="' + format + '"]').checked = true;
          showError(form, err, jsonError);
        }
      });
    });

    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      clearErrors(form);
      warningsList(document.getElementById("entity-warnings"), []);
      try {
        const body = parseEditor(editor.value, format);
        withFields(body);
        const result = existing
          ? await api("PUT", "/" + plural + "/" + encodeURIComponent(existing), body)
          : await api("POST", "/" + plural, body);
        editor.value = formatEditor(result.entity, format);
        warningsList(document.getElementById("entity-warnings"), result.warnings);
        const saved = document.getElementById("entity-error");
        if (!existing) {
          window.location.assign("/ui/admin/" + plural + "/" + encodeURIComponent(body.name) +
                                 "?created=1");
        } else {
          saved.textContent = "";
          form.dataset.saved = String(Date.now());
        }
      } catch (err) {
        showError(form, err, jsonError);
      }
    });

    const remove = document.getElementById("delete");
    if (remove) {
      remove.addEventListener("click", async () => {
        if (remove.dataset.armed !== "1") {
          remove.dataset.armed = "1";
          remove.textContent = "Really delete " + existing + "?";
          return;
        }
        try {
          const result = await api("DELETE", "/" + plural + "/" + encodeURIComponent(existing));
          const messages = (result.warnings || []).map((w) => w.message).join(" | ");
          window.location.assign("/ui/admin" + (messages ? "?deleted=" +
                                 encodeURIComponent(messages) : ""));
        } catch (err) {
          showError(form, err);
        }
      });
    }
  }

  // -- admin: import ---------------------------------------------------------------------------------

  const KIND_OF = {providers: "provider", hardwaretypes: "hardwaretype", imagetypes: "imagetype",
                   services: "service", clustertemplates: "template",
                   partialtemplates: "partial"};

  function importPage() {
    const form = document.getElementById("import-form");
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      clearErrors(form);
      const result = document.getElementById("import-result");
      const list = document.getElementById("import-warnings");
      result.textContent = "";
      list.replaceChildren();
      const file = form.elements.file.files[0];
      try {
        if (!file) {
          const err = new Error("choose a file first");
          throw err;
        }
        let answer;
        if (/\.json$/i.test(file.name)) {
          // An export: {"entities": [{kind, body}]} or {"services": [bodies], ...}.
          const doc = JSON.parse(await file.text());
          const entities = doc.entities || Object.entries(doc).flatMap(([folder, bodies]) =>
            (Array.isArray(bodies) ? bodies : []).map((body) => ({kind: KIND_OF[folder], body})));
          answer = await api("POST", "/catalog/import", {entities});
        } else {
          answer = await api("POST", "/catalog/import/archive", file, "application/octet-stream");
        }
        result.textContent = "Imported " + answer.imported + " entities from " + file.name +
          (answer.warnings.length ? ", with " + answer.warnings.length + " warnings:" : ".");
        warningsList(list, answer.warnings);
      } catch (err) {
        showError(form, err);
      }
    });
  }

  // -- admin: plugin resources -------------------------------------------------------------------

  function resourcesPage() {
    const form = document.getElementById("upload-form");
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      clearErrors(form);
      try {
        const file = form.elements.file.files[0];
        if (!file) throw new Error("choose a file first");
        const name = form.elements.name.value.trim() || file.name;
        await api("PUT", "/resources/" + form.elements.kind.value + "/" +
                  encodeURIComponent(name), file, "application/octet-stream");
        window.location.reload();
      } catch (err) {
        showError(form, err);
      }
    });
    const error = document.getElementById("resource-error");
    document.querySelectorAll("#resources button[data-act]").forEach((button) => {
      button.addEventListener("click", async () => {
        const row = button.closest("tr");
        const base = "/resources/" + row.dataset.kind + "/" + encodeURIComponent(row.dataset.name) +
          "/versions/" + row.dataset.version;
        error.textContent = "";
        try {
          if (button.dataset.act === "delete") await api("DELETE", base);
          else await api("POST", base + "/" + button.dataset.act);
          window.location.reload();
        } catch (err) {
          error.textContent = err.message;
        }
      });
    });
  }

  // -- admin: tenants, users, tokens, shared templates ------------------------------------------

  function peoplePage() {
    const pageError = document.getElementById("people-error");
    document.querySelectorAll(".api-form").forEach((form) => {
      form.addEventListener("submit", async (event) => {
        event.preventDefault();
        clearErrors(form);
        const data = {};
        // form.elements: also the inputs in a table row's cells that name this form.
        for (const input of form.elements) {
          if (!input.name || !["INPUT", "SELECT"].includes(input.tagName)) continue;
          const value = input.value.trim();
          // Creating, an empty field is left unset (no quota, every user); editing
          // (data-empty="null"), it lifts the limit.
          if (value === "" && form.dataset.empty !== "null") continue;
          data[input.name] = value === "" ? null : input.dataset.number ? Number(value) : value;
        }
        try {
          await api(form.dataset.method, form.dataset.path, data);
          window.location.reload();
        } catch (err) {
          showError(form, err);
        }
      });
    });
    document.querySelectorAll("button[data-method]").forEach((button) => {
      button.addEventListener("click", async () => {
        pageError.textContent = "";
        pageError.classList.remove("shown");
        if (button.dataset.method === "DELETE" && button.dataset.armed !== "1") {
          button.dataset.armed = "1";
          button.textContent = "Really?";
          return;
        }
        try {
          const answer = await api(button.dataset.method, button.dataset.path,
                                   button.dataset.method === "POST" ? {} : undefined);
          if (answer && answer.token) {
            // The only time the API shows it: not in the page's HTML, not stored.
            document.getElementById("issued-user").textContent = answer.user;
            document.getElementById("issued-token").textContent = answer.token;
            document.getElementById("issued").hidden = false;
          } else {
            window.location.reload();
          }
        } catch (err) {
          pageError.textContent = err.message;
          pageError.classList.add("shown");
        }
      });
    });
  }

  const pages = {template: templatePage, cluster: clusterPage, entity: entityPage,
                 import: importPage, resources: resourcesPage, people: peoplePage};
  window.shoal = {api, el, showError, clearErrors, jsonField, pages};
  document.addEventListener("DOMContentLoaded", () => {
    const start = pages[document.body.dataset.page];
    if (start) start();
  });
})();
