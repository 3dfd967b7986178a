// The wvs dashboard: reads the REST API every 1.5 s, edits through it with the bearer token.
// Every text that comes from the API is set with textContent (never as HTML), so a hostile
// name shows as text.
import uPlot from "uplot";

const POLL_MS = 1500;
const HISTORY = 120; // points kept for the charts (3 minutes)

const $ = (id) => document.getElementById(id);

/** Build an element: el("td", {class: "num"}, "text" | node, ...). */
function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children) {
    if (c === undefined || c === null) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function fmt(n) {
  if (n === undefined || n === null) return "-";
  const a = Math.abs(n);
  if (a >= 1e9) return (n / 1e9).toFixed(2) + "G";
  if (a >= 1e6) return (n / 1e6).toFixed(2) + "M";
  if (a >= 1e4) return (n / 1e3).toFixed(1) + "k";
  return String(n);
}

// --- the API -----------------------------------------------------------------------------
let token = sessionStorage.getItem("wvs-token") || "";

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function api(method, path, body, contentType = "application/json") {
  const headers = {};
  if (token) headers["Authorization"] = "Bearer " + token;
  let payload;
  if (body !== undefined) {
    headers["Content-Type"] = contentType;
    payload = contentType === "application/json" ? JSON.stringify(body) : body;
  }
  const r = await fetch(path, { method, headers, body: payload });
  const text = await r.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!r.ok) {
    throw new ApiError(r.status, (data && data.error) || text || r.statusText);
  }
  return data;
}

const enc = encodeURIComponent;
const svcPath = (s) => `/api/v1/services/${enc(s.protocol)}/${enc(s.address)}`;

// --- errors next to their fields -----------------------------------------------------------
function clearErrors(form) {
  for (const e of form.querySelectorAll(".error")) e.textContent = "";
}

/** Show an API error next to the field it is about (guessed from its words), else on the form. */
function showError(form, err, fields) {
  const msg = err instanceof ApiError ? err.message : String(err);
  const lower = msg.toLowerCase();
  let target = "form";
  if (err instanceof ApiError && err.status === 401) target = "form";
  else {
    for (const [field, words] of fields) {
      if (words.some((w) => lower.includes(w))) {
        target = field;
        break;
      }
    }
  }
  const slot = form.querySelector(`.error[data-for="${target}"]`) || form.querySelector('.error[data-for="form"]');
  slot.textContent = err instanceof ApiError && err.status === 401 ? msg + " — enter the API token above" : msg;
}

const SERVICE_FIELDS = [
  ["scheduler", ["scheduler"]],
  ["flags", ["flag"]],
  ["persistent", ["persistence", "timeout"]],
  ["protocol", ["protocol"]],
  ["address", ["address", "ip:port", "service", "exists"]],
];
const REAL_FIELDS = [
  ["weight", ["weight"]],
  ["tunnel", ["tunnel", "tun_"]],
  ["forward", ["forwarding method", "forward"]],
  ["threshold", ["threshold"]],
  ["service", ["no service"]],
  ["address", ["address", "ip:port", "real server", "exists"]],
];

// --- charts --------------------------------------------------------------------------------
const hist = { t: [], cps: [], inpps: [], outpps: [], inbps: [], outbps: [] };
const svcHist = new Map(); // "proto/addr" -> {t, cps, pps}
const charts = {};

function chartOpts(el, series, height = 150) {
  return {
    width: Math.max(160, el.clientWidth - 4),
    height,
    legend: { show: series.length > 1 && height > 80 },
    axes: [{ show: height > 80 }, { size: 50 }],
    scales: { x: { time: true } },
    series: [{}, ...series.map((s) => ({ label: s.label, stroke: s.color, width: 1.5, points: { show: false } }))],
  };
}

function makeChart(id, series) {
  const host = $(id);
  const data = [[], ...series.map(() => [])];
  const plot = new uPlot(chartOpts(host, series), data, host);
  charts[id] = { plot, series };
  // Follow the box's width (window resizes, the grid reflowing on a narrow screen).
  new ResizeObserver(() => plot.setSize({ width: Math.max(200, host.clientWidth - 4), height: 150 })).observe(host);
}

function push(arr, v) {
  arr.push(v);
  if (arr.length > HISTORY) arr.shift();
}

// --- rendering -----------------------------------------------------------------------------
function card(k, v, testid) {
  return el("div", { class: "card" }, el("div", { class: "v", "data-testid": testid }, v), el("div", { class: "k" }, k));
}

let services = [];
let editing = null; // the service being edited, or null

function renderTotals(st) {
  const t = st.totals, r = st.rates, p = st.plugins;
  $("totals").replaceChildren(
    card("connections (total)", fmt(t.conns), "total-conns"),
    card("connections now", fmt(st.connections), "conns-now"),
    card("conn/s", fmt(r.cps), "cps"),
    card("packets in / out /s", `${fmt(r.inpps)} / ${fmt(r.outpps)}`, "pps"),
    card("bytes in / out /s", `${fmt(r.inbps)} / ${fmt(r.outbps)}`, "bps"),
    card("packets in (total)", fmt(t.inpkts), "total-inpkts"),
    card("plugin calls", fmt(p.calls), "plugin-calls"),
    card("plugin traps / fallbacks", `${fmt(p.traps)} / ${fmt(p.fallbacks)}`, "plugin-traps"),
  );
  const d = st.datapath;
  const drops = Object.entries(d.drops);
  $("datapath").replaceChildren(
    card("frames received", fmt(d.rx)),
    card("frames sent", fmt(d.tx)),
    card("left to the kernel", fmt(d.passed)),
    card("ICMP sent", fmt(d.icmp_sent)),
    defenseCard(st.defense),
    synproxyCard(d.synproxy, st.defense),
    ...(drops.length ? drops.map(([k, v]) => card("drop: " + k, fmt(v), "drop-" + k)) : [card("drops", "0", "drops")]),
  );
}

/** The flood defense (docs/defense.md): idle, or what acts, with what it did so far. */
function defenseCard(df) {
  if (!df) return card("defense", "-", "defense");
  const acting = [
    df.drop_entry === 2 || df.drop_entry === 3 ? "drop_entry" : null,
    df.drop_rate ? `drop_packet 1/${df.drop_rate}` : null,
    df.secure_tcp === 2 || df.secure_tcp === 3 ? "secure_tcp" : null,
  ].filter(Boolean);
  const state = df.active ? "acting: " + acting.join(", ") : "idle";
  const done = `evicted ${fmt(df.evicted)}, dropped ${fmt(df.dropped_entries)} entries / ${fmt(df.dropped_packets)} new`;
  return el(
    "div",
    { class: df.active ? "card defense acting" : "card defense" },
    el("div", { class: "v", "data-testid": "defense" }, state),
    el("div", { class: "k" }, "defense (" + done + ")"),
  );
}

/** The synproxy (docs/defense.md#synproxy): whether it answers with cookies, and what it did. */
function synproxyCard(sp, df) {
  if (!sp) return card("synproxy", "-", "synproxy");
  const mode = df ? df.synproxy : 0;
  const state = mode === 2 || mode === 3 ? "cookies" : mode === 1 ? "auto, idle" : "off";
  const done =
    `${fmt(sp.cookies_sent)} cookies, ${fmt(sp.acks_accepted)} accepted / ${fmt(sp.acks_rejected)} rejected, ` +
    `${fmt(sp.joined)} joined, ${fmt(sp.half_joined)} half-joined`;
  return el(
    "div",
    { class: "card synproxy" },
    el("div", { class: "v", "data-testid": "synproxy" }, state),
    el("div", { class: "k", "data-testid": "synproxy-events" }, "synproxy (" + done + ")"),
  );
}

/** The forwarding method as ipvsadm -L names it, with the tunnel as --tun-info shows it. */
function methodName(r) {
  if (r.forward === "dr") return "Route";
  if (r.forward === "fullnat") return "FullNat";
  if (r.forward === "local") return "Local";
  if (r.forward !== "tunnel") return "Masq";
  const type = r.tun_type || "ipip";
  const csum = r.tun_csum || "nocsum";
  if (type === "gue") return `Tunnel gue:${r.tun_port}:${csum}`;
  if (type === "gre") return `Tunnel gre:${csum}`;
  return "Tunnel ipip";
}

/** A real server's forwarding fields, as the API takes them. */
function methodFields(forward, type, port, csum) {
  const m = { forward };
  if (forward !== "tunnel") return m;
  m.tun_type = type || "ipip";
  if (port) m.tun_port = Number(port);
  if (csum && csum !== "nocsum") m.tun_csum = csum;
  return m;
}

/** How long ago `ms` (since the epoch) was, shortly. */
function ago(ms) {
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.round(s / 60)}m`;
  return `${Math.round(s / 3600)}h`;
}

/**
 * A real server's health cell: what its check found (state, since when, the last result
 * and its latency, and the latest results as a strip, oldest first), or, unchecked, what
 * the weights and next hop say.
 */
function healthCell(r) {
  const h = r.health;
  if (r.drain_until_ms) {
    return el("td", { class: "warn", "data-health": "draining" }, `draining, ${Math.max(0, Math.round((r.drain_until_ms - Date.now()) / 1000))}s left at most`);
  }
  if (!h) {
    const label = r.sorry ? (r.scheduled ? "sorry (in use)" : "sorry (standby)") : r.weight === 0 ? "drained" : r.overloaded ? "overloaded" : r.reachable ? "unchecked" : "no next hop";
    return el("td", { class: r.weight === 0 || r.overloaded || !r.reachable ? "warn" : "muted", "data-health": "derived" }, label);
  }
  const last = h.last;
  const lastText = last ? `${last.detail}, ${(last.latency_us / 1000).toFixed(1)} ms` : "not checked yet";
  const strip = el(
    "span",
    { class: "hist", "data-history": "" },
    ...h.history.map((o) => el("i", { class: o.ok ? "pass" : "fail", title: `${new Date(o.at_ms).toLocaleTimeString()}: ${o.detail}` })),
  );
  return el(
    "td",
    { class: h.state === "up" ? "ok" : "warn", "data-health": h.state, title: `${h.check} check of ${h.target}: ${lastText}; ${h.passes} passes, ${h.failures} failures in a row` },
    `${h.state} ${ago(h.since_ms)} (${h.check})`,
    " ",
    strip,
  );
}

/** A real server removed with a grace period: its connections end, it takes no new one. */
function drainingRow(r) {
  return el(
    "tr",
    { "data-real": r.address, "data-draining": "" },
    el("td", {}, r.address),
    el("td", {}, methodName(r)),
    el("td", { class: "num" }, 0),
    healthCell(r),
    el("td", { class: "num" }, fmt(r.active_conns)),
    el("td", { class: "num" }, fmt(r.inactive_conns)),
    el("td", { class: "num" }, fmt(r.stats.conns)),
    el("td", { class: "num" }, fmt(r.rates.cps)),
    el("td", { class: "num" }, `${fmt(r.rates.inpps)} / ${fmt(r.rates.outpps)}`),
    el("td", {}),
  );
}

function realRow(s, r) {
  return el(
    "tr",
    { "data-real": r.address },
    el("td", {}, r.address),
    el("td", {}, methodName(r)),
    el("td", { class: "num" }, r.weight),
    healthCell(r),
    el("td", { class: "num" }, fmt(r.active_conns)),
    el("td", { class: "num" }, fmt(r.inactive_conns)),
    el("td", { class: "num", "data-testid": "real-conns" }, fmt(r.stats.conns)),
    el("td", { class: "num" }, fmt(r.rates.cps)),
    el("td", { class: "num" }, `${fmt(r.rates.inpps)} / ${fmt(r.rates.outpps)}`),
    el(
      "td",
      {},
      el("button", { type: "button", class: "drain", title: "weight 0: no new connections", onclick: () => drain(s, r) }, "drain"),
      " ",
      el("button", { type: "button", onclick: () => pickReal(s, r) }, "edit"),
      " ",
      el("button", { type: "button", onclick: () => deleteReal(s, r) }, "delete"),
    ),
  );
}

function renderServices() {
  const box = $("services");
  const seen = new Set();
  const nodes = services.map((s) => {
    const key = `${s.protocol}/${s.address}`;
    seen.add(key);
    const sparkId = "spark-" + key.replace(/[^a-zA-Z0-9]/g, "_");
    const head = el(
      "div",
      { class: "head" },
      el("span", { class: "name", "data-testid": "service-name" }, `${s.protocol.toUpperCase()} ${s.address}`),
      el("span", { class: "meta" }, `${s.scheduler} (${s.scheduler_runs})`),
      s.flags.length ? el("span", { class: "meta" }, s.flags.join(",")) : null,
      s.persistent ? el("span", { class: "meta" }, `persistent ${s.persistent}s mask ${s.netmask}`) : null,
      (s.helpers || []).length ? el("span", { class: "meta", "data-helpers": "" }, "helpers " + s.helpers.join(",")) : null,
      s.synproxy ? el("span", { class: "meta", "data-synproxy": "" }, "synproxy " + s.synproxy) : null,
      (s.laddrs || []).length
        ? el("span", { class: "meta", "data-laddrs": "" }, "local addresses " + s.laddrs.map((l) => `${l.address} (${l.conns})`).join(", "))
        : null,
      el("span", { class: "meta", "data-testid": "service-conns" }, `conns ${fmt(s.stats.conns)}`),
      el("span", { class: "meta" }, `${fmt(s.rates.cps)} conn/s, ${fmt(s.rates.inpps)}/${fmt(s.rates.outpps)} pps`),
      el("button", { type: "button", class: "edit", onclick: () => editService(s) }, "edit"),
      el("button", { type: "button", class: "delete", onclick: () => deleteService(s) }, "delete"),
    );
    const table = el(
      "table",
      { class: "grid" },
      el(
        "thead",
        {},
        el(
          "tr",
          {},
          ...["real server", "forward", "weight", "health", "active", "inactive", "conns", "conn/s", "pps in/out", ""].map((h) => el("th", {}, h)),
        ),
      ),
      el("tbody", {}, ...s.reals.map((r) => realRow(s, r)), ...(s.draining || []).map((r) => drainingRow(r))),
    );
    const spark = el("div", { class: "spark", id: sparkId });
    return { node: el("div", { class: "service", "data-service": key }, head, el("div", { class: "scroll" }, table), spark), key, sparkId };
  });
  box.replaceChildren(...nodes.map((n) => n.node));
  if (!services.length) box.replaceChildren(el("p", { class: "muted" }, "No virtual service yet: add one below."));
  // Per-service sparklines of conn/s and packets/s.
  for (const { key, sparkId } of nodes) {
    const h = svcHist.get(key);
    const host = $(sparkId);
    if (!h || !host) continue;
    const plot = new uPlot(
      chartOpts(host, [{ label: "conn/s", color: "#2457c5" }, { label: "pkt/s in", color: "#067647" }], 60),
      [h.t, h.cps, h.pps],
      host,
    );
    host._plot = plot;
  }
  for (const k of [...svcHist.keys()]) if (!seen.has(k)) svcHist.delete(k);
  // The service pickers.
  const opts = services.map((s) => el("option", { value: `${s.protocol}/${s.address}` }, `${s.protocol} ${s.address}`));
  const rs = $("real-service");
  const keep = rs.value;
  rs.replaceChildren(...opts);
  if (keep) rs.value = keep;
  const cs = $("conn-service");
  const keepC = cs.value;
  cs.replaceChildren(el("option", { value: "" }, "every service"), ...opts.map((o) => o.cloneNode(true)));
  cs.value = keepC;
}

function renderPlugins(list) {
  const names = list.map((p) => p.name);
  const sel = $("svc-scheduler");
  const keep = sel.value || "wlc";
  sel.replaceChildren(...names.map((n) => el("option", { value: n }, n)));
  sel.value = names.includes(keep) ? keep : "wlc";
  $("plugins").tBodies[0].replaceChildren(
    ...list.map((p) =>
      el(
        "tr",
        {},
        el("td", {}, p.name),
        el("td", {}, p.kind),
        el("td", {}, p.used_by.join(", ") || "-"),
        el("td", {}, p.kind === "custom" ? el("button", { type: "button", onclick: () => deletePlugin(p) }, "delete") : null),
      ),
    ),
  );
}

// --- polling -------------------------------------------------------------------------------
let pluginTick = 0;
async function poll() {
  try {
    const [list, st] = await Promise.all([api("GET", "/api/v1/services"), api("GET", "/api/v1/stats")]);
    services = list;
    const now = Date.now() / 1000;
    push(hist.t, now);
    for (const k of ["cps", "inpps", "outpps", "inbps", "outbps"]) push(hist[k], st.rates[k]);
    for (const s of services) {
      const key = `${s.protocol}/${s.address}`;
      if (!svcHist.has(key)) svcHist.set(key, { t: [], cps: [], pps: [] });
      const h = svcHist.get(key);
      push(h.t, now);
      push(h.cps, s.rates.cps);
      push(h.pps, s.rates.inpps);
    }
    renderTotals(st);
    renderServices();
    charts["chart-cps"].plot.setData([hist.t, hist.cps]);
    charts["chart-pps"].plot.setData([hist.t, hist.inpps, hist.outpps]);
    charts["chart-bps"].plot.setData([hist.t, hist.inbps, hist.outbps]);
    if (pluginTick++ % 5 === 0) {
      renderPlugins(await api("GET", "/api/v1/plugins"));
      renderDaemons(await api("GET", "/api/v1/daemons"));
    }
    $("status").textContent = `live · ${services.length} services · updated ${new Date().toLocaleTimeString()}`;
    $("status").className = "status";
  } catch (e) {
    // Reads need the token too (the tables hold client addresses).
    $("status").textContent =
      e instanceof ApiError && e.status === 401 ? "enter the API token above to read and edit" : "cannot reach wvs: " + e.message;
    $("status").className = "status bad";
  }
}

// --- editing -------------------------------------------------------------------------------
// A service's settings: the body of PUT /services/{proto}/{addr} (the path names it).
function serviceSettings() {
  const persistent = $("svc-persistent").value.trim();
  return {
    scheduler: $("svc-scheduler").value,
    flags: $("svc-flags").value.split(",").map((f) => f.trim()).filter(Boolean),
    ...(persistent ? { persistent: Number(persistent) } : {}),
  };
}

// A whole service: the body of POST /services.
function serviceBody() {
  return {
    protocol: $("svc-protocol").value,
    address: $("svc-address").value.trim(),
    ...serviceSettings(),
  };
}

function editService(s) {
  editing = s;
  $("service-form-title").textContent = `Edit ${s.protocol} ${s.address}`;
  $("svc-protocol").value = s.protocol;
  $("svc-address").value = s.address;
  $("svc-protocol").disabled = true;
  $("svc-address").disabled = true;
  $("svc-scheduler").value = s.scheduler;
  $("svc-flags").value = s.flags.join(", ");
  $("svc-persistent").value = s.persistent || "";
  $("svc-submit").textContent = "Save";
  $("svc-cancel").hidden = false;
}

function resetServiceForm() {
  editing = null;
  $("service-form").reset();
  $("service-form-title").textContent = "Add a service";
  $("svc-protocol").disabled = false;
  $("svc-address").disabled = false;
  $("svc-submit").textContent = "Add service";
  $("svc-cancel").hidden = true;
  $("svc-scheduler").value = "wlc";
}

async function submitService(ev) {
  ev.preventDefault();
  const form = $("service-form");
  clearErrors(form);
  try {
    if (editing) await api("PUT", svcPath(editing), serviceSettings());
    else await api("POST", "/api/v1/services", serviceBody());
    resetServiceForm();
    await poll();
  } catch (e) {
    showError(form, e, SERVICE_FIELDS);
  }
}

async function deleteService(s) {
  if (!confirm(`Delete ${s.protocol} ${s.address}?`)) return;
  try {
    await api("DELETE", svcPath(s));
    await poll();
  } catch (e) {
    showError($("service-form"), e, SERVICE_FIELDS);
  }
}

// A real server's settings: the body of PUT …/reals/{real} (the path names it).
function realSettings() {
  return {
    weight: Number($("real-weight").value || 0),
    ...methodFields($("real-forward").value, $("real-tun-type").value, $("real-tun-port").value, $("real-tun-csum").value),
    upper_threshold: Number($("real-upper").value || 0),
    lower_threshold: Number($("real-lower").value || 0),
  };
}

function chosenService() {
  const v = $("real-service").value;
  const i = v.indexOf("/");
  return i < 0 ? null : { protocol: v.slice(0, i), address: v.slice(i + 1) };
}

async function submitReal(ev, update) {
  ev.preventDefault();
  const form = $("real-form");
  clearErrors(form);
  const s = chosenService();
  if (!s) {
    form.querySelector('.error[data-for="service"]').textContent = "add a service first";
    return;
  }
  const address = $("real-address").value.trim();
  try {
    if (update) await api("PUT", `${svcPath(s)}/reals/${enc(address)}`, realSettings());
    else await api("POST", `${svcPath(s)}/reals`, { address, ...realSettings() });
    $("real-address").value = "";
    await poll();
  } catch (e) {
    showError(form, e, REAL_FIELDS);
  }
}

function pickReal(s, r) {
  $("real-service").value = `${s.protocol}/${s.address}`;
  $("real-address").value = r.address;
  $("real-weight").value = r.weight;
  $("real-forward").value = r.forward;
  $("real-tun-type").value = r.tun_type || "ipip";
  $("real-tun-port").value = r.tun_port || "";
  $("real-tun-csum").value = r.tun_csum || "nocsum";
  $("real-upper").value = r.upper_threshold;
  $("real-lower").value = r.lower_threshold;
}

async function drain(s, r) {
  try {
    // Everything else as it is: a PUT replaces the settings, the method with them.
    await api("PUT", `${svcPath(s)}/reals/${enc(r.address)}`, {
      weight: 0,
      ...methodFields(r.forward, r.tun_type, r.tun_port, r.tun_csum),
      upper_threshold: r.upper_threshold,
      lower_threshold: r.lower_threshold,
      hint: r.hint,
    });
    await poll();
  } catch (e) {
    showError($("real-form"), e, REAL_FIELDS);
  }
}

async function deleteReal(s, r) {
  if (!confirm(`Remove ${r.address} from ${s.protocol} ${s.address}?`)) return;
  try {
    await api("DELETE", `${svcPath(s)}/reals/${enc(r.address)}`);
    await poll();
  } catch (e) {
    showError($("real-form"), e, REAL_FIELDS);
  }
}

async function submitPlugin(ev) {
  ev.preventDefault();
  const form = $("plugin-form");
  clearErrors(form);
  const name = $("plugin-name").value.trim();
  const file = $("plugin-file").files[0];
  if (!file) {
    form.querySelector('.error[data-for="file"]').textContent = "choose a .wasm file";
    return;
  }
  try {
    const list = await api("PUT", `/api/v1/plugins/${enc(name)}`, await file.arrayBuffer(), "application/wasm");
    renderPlugins(list);
    form.reset();
  } catch (e) {
    showError(form, e, [["name", ["name"]], ["file", ["module", "webassembly", "abi", "compile"]]]);
  }
}

async function deletePlugin(p) {
  try {
    await api("DELETE", `/api/v1/plugins/${enc(p.name)}`);
    renderPlugins(await api("GET", "/api/v1/plugins"));
  } catch (e) {
    showError($("plugin-form"), e, []);
  }
}

// --- connection sync -----------------------------------------------------------------------
const DAEMON_FIELDS = [
  ["mcast_interface", ["interface"]],
  ["syncid", ["syncid"]],
  ["mcast", ["mcast", "group", "port", "ttl"]],
];

function renderDaemons(list) {
  $("daemons").tBodies[0].replaceChildren(
    ...list.map((d) =>
      el(
        "tr",
        { "data-testid": `daemon-${d.state}` },
        el("td", {}, d.state),
        el("td", {}, d.mcast_interface),
        el("td", {}, String(d.syncid)),
        el("td", {}, d.effective.mcast_group),
        el("td", {}, String(d.effective.mcast_port)),
        el("td", {}, String(d.effective.sync_maxlen)),
        el("td", {}, String(d.effective.mcast_ttl)),
        el("td", { class: d.running ? "" : "bad" }, d.running ? "yes" : "no"),
        el("td", {}, el("button", { type: "button", onclick: () => stopDaemon(d.state) }, "stop")),
      ),
    ),
  );
}

async function submitDaemon(ev) {
  ev.preventDefault();
  const form = $("daemon-form");
  clearErrors(form);
  const body = {
    state: $("daemon-state").value,
    mcast_interface: $("daemon-iface").value.trim(),
    syncid: Number($("daemon-syncid").value || 0),
  };
  if ($("daemon-group").value.trim()) body.mcast_group = $("daemon-group").value.trim();
  if ($("daemon-port").value) body.mcast_port = Number($("daemon-port").value);
  if ($("daemon-ttl").value) body.mcast_ttl = Number($("daemon-ttl").value);
  try {
    renderDaemons(await api("POST", "/api/v1/daemons", body));
  } catch (e) {
    showError(form, e, DAEMON_FIELDS);
  }
}

async function stopDaemon(state) {
  try {
    await api("DELETE", `/api/v1/daemons/${enc(state)}`);
    renderDaemons(await api("GET", "/api/v1/daemons"));
  } catch (e) {
    showError($("daemon-form"), e, []);
  }
}

// --- connections ---------------------------------------------------------------------------
function expire(ms) {
  const s = Math.floor(ms / 1000);
  return `${String(Math.floor(s / 60)).padStart(2, "0")}:${String(s % 60).padStart(2, "0")}`;
}

async function showConns(ev) {
  if (ev) ev.preventDefault();
  const form = $("conn-filter");
  clearErrors(form);
  const q = new URLSearchParams({ limit: "500" });
  if ($("conn-service").value) q.set("service", $("conn-service").value);
  if ($("conn-real").value.trim()) q.set("real", $("conn-real").value.trim());
  if ($("conn-state").value) q.set("state", $("conn-state").value);
  try {
    const list = await api("GET", "/api/v1/connections?" + q);
    $("conn-count").textContent = list.next
    ? `${list.connections.length} shown, more matching`
    : `${list.matched} matching, ${list.connections.length} shown`;
    $("conns").tBodies[0].replaceChildren(
      ...list.connections.map((c) =>
        el(
          "tr",
          {},
          el("td", {}, c.protocol.toUpperCase()),
          el("td", {}, expire(c.expires_ms)),
          el("td", {}, c.state),
          el("td", {}, c.client),
          el("td", {}, c.virtual_address),
          el("td", {}, c.real),
        ),
      ),
    );
  } catch (e) {
    showError(form, e, []);
  }
}

// --- start ---------------------------------------------------------------------------------
function start() {
  $("token").value = token;
  $("token-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    token = $("token").value.trim();
    sessionStorage.setItem("wvs-token", token);
    $("status").textContent = token ? "token set" : "token cleared";
    api("GET", "/api/v1/plugins").then(renderPlugins).catch(() => {});
    poll();
  });
  $("service-form").addEventListener("submit", submitService);
  $("svc-cancel").addEventListener("click", resetServiceForm);
  $("real-form").addEventListener("submit", (ev) => submitReal(ev, false));
  $("real-update").addEventListener("click", (ev) => submitReal(ev, true));
  $("plugin-form").addEventListener("submit", submitPlugin);
  $("conn-filter").addEventListener("submit", showConns);
  $("daemon-form").addEventListener("submit", submitDaemon);
  const states = ["ESTABLISHED", "SYN_RECV", "FIN_WAIT", "TIME_WAIT", "CLOSE", "CLOSE_WAIT", "LAST_ACK", "NONE", "UDP"];
  $("conn-state").append(...states.map((s) => el("option", { value: s }, s)));
  makeChart("chart-cps", [{ label: "conn/s", color: "#2457c5" }]);
  makeChart("chart-pps", [{ label: "in", color: "#067647" }, { label: "out", color: "#b54708" }]);
  makeChart("chart-bps", [{ label: "in", color: "#067647" }, { label: "out", color: "#b54708" }]);
  api("GET", "/api/v1/plugins").then(renderPlugins).catch(() => {});
  poll();
  setInterval(poll, POLL_MS);
}

start();
