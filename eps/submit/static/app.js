// The submission page: a citizen enters contact persons and events, checks
// them, and sends them sealed to the health office's key. The secret of the
// one-time link is read from the URL fragment and only ever sent as the
// bearer token of this page's own two requests. The DOM is built with
// createElement and textContent only (the CSP enforces Trusted Types).

import { sealFor } from "./kurier-seal.js";

const FORMAT = "kurier-submission/v2";
const MAX_ENTRIES = 500;
const MAX_BODY = 1 << 20; // the handler's default bound on POST /submit

const $ = (id) => document.getElementById(id);

const state = {
  secret: null, // the link secret, in memory only
  info: null, // /.well-known/kurier-link
  nextID: 1, // ids of rows never repeat, numbers shown are positions
  sending: false,
};

// ---- small helpers -------------------------------------------------------

function el(tag, props = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

function announce(text) {
  // Clear first so that the same text is announced again.
  const s = $("status");
  s.textContent = "";
  setTimeout(() => { s.textContent = text; }, 50);
}

function showAlert(text) {
  const a = $("alert");
  a.textContent = text;
  a.hidden = false;
}

function clearAlert() {
  const a = $("alert");
  a.textContent = "";
  a.hidden = true;
}

const STEPS = ["step-loading", "step-form", "step-review", "step-done", "step-dead"];

function show(step, focusTarget) {
  for (const s of STEPS) $(s).hidden = s !== step;
  const f = focusTarget || $(step);
  if (f) f.focus();
}

function today() {
  const d = new Date();
  const p = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}`;
}

function germanDate(s) {
  const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(s);
  return m ? `${m[3]}.${m[2]}.${m[1]}` : s;
}

function germanDateTime(s) {
  const m = /^(\d{4}-\d{2}-\d{2})T(\d{2}:\d{2})$/.exec(s);
  return m ? `${germanDate(m[1])}, ${m[2]} Uhr` : s;
}

function germanInstant(d) {
  try {
    return new Intl.DateTimeFormat("de-DE", { dateStyle: "long", timeStyle: "short" }).format(d) + " Uhr";
  } catch {
    return d.toISOString();
  }
}

// ---- the dead ends -------------------------------------------------------

function dead(title, reason) {
  $("dead-title").textContent = title;
  $("dead-reason").textContent = reason;
  clearAlert();
  show("step-dead");
}

const USED = "Dieser Link wurde bereits verwendet. Ihre Angaben sind beim Gesundheitsamt eingegangen.";
const EXPIRED = "Dieser Link ist abgelaufen.";
const INVALID = "Der Link ist ungültig oder unvollständig. Bitte prüfen Sie, ob Sie ihn vollständig kopiert haben.";

async function refusal(res) {
  let code = "";
  try {
    code = (await res.json()).error || "";
  } catch {
    // not JSON: use the status alone
  }
  if (res.status === 410) return code === "expired" ? EXPIRED : USED;
  if (res.status === 401) return INVALID;
  return null;
}

// ---- rows ----------------------------------------------------------------

const GROUPS = {
  contact: { list: "contact-list", tpl: "tpl-contact", empty: "contacts-empty", add: "add-contact", noun: "Kontaktperson", prefix: "c" },
  event: { list: "event-list", tpl: "tpl-event", empty: "events-empty", add: "add-event", noun: "Ereignis", prefix: "e" },
};

function addRow(kind, focus) {
  const g = GROUPS[kind];
  const list = $(g.list);
  if (list.children.length >= MAX_ENTRIES) {
    showAlert(`Sie können höchstens ${MAX_ENTRIES} Einträge dieser Art erfassen.`);
    return;
  }
  const id = `${g.prefix}${state.nextID++}`;
  const row = $(g.tpl).content.firstElementChild.cloneNode(true);
  row.dataset.kind = kind;
  row.id = id;
  for (const input of row.querySelectorAll("[data-field]:not([data-group])")) {
    input.id = `${id}-${input.dataset.field}`;
    input.name = input.id;
  }
  for (const label of row.querySelectorAll("label[data-for]")) {
    label.htmlFor = `${id}-${label.dataset.for}`;
  }
  for (const e of row.querySelectorAll("[data-id]")) e.id = `${id}-${e.dataset.id}`;
  for (const e of row.querySelectorAll("[data-describedby]")) {
    e.setAttribute("aria-describedby", `${id}-${e.dataset.describedby}`);
  }
  for (const group of row.querySelectorAll("[data-group=radio]")) {
    group.id = `${id}-${group.dataset.field}`;
    for (const radio of group.querySelectorAll("input[type=radio]")) {
      radio.name = `${id}-${group.dataset.field}`;
      radio.id = `${id}-${group.dataset.field}-${radio.dataset.choice}`;
    }
    for (const label of group.querySelectorAll("label[data-for-choice]")) {
      label.htmlFor = `${id}-${group.dataset.field}-${label.dataset.forChoice}`;
    }
  }
  for (const input of row.querySelectorAll("input[type=date]")) input.max = today();
  row.querySelector("[data-action=remove]").addEventListener("click", () => removeRow(row));
  list.append(row);
  renumber(kind);
  if (focus) {
    row.querySelector("input").focus();
    announce(`${g.noun} ${list.children.length} hinzugefügt.`);
  }
}

function removeRow(row) {
  const kind = row.dataset.kind;
  const g = GROUPS[kind];
  const n = [...$(g.list).children].indexOf(row) + 1;
  row.remove();
  renumber(kind);
  $(g.add).focus();
  announce(`${g.noun} ${n} wurde entfernt.`);
}

function renumber(kind) {
  const g = GROUPS[kind];
  const rows = [...$(g.list).children];
  rows.forEach((row, i) => {
    row.querySelector(".entry-no").textContent = String(i + 1);
    row.querySelector("[data-action=remove]").textContent = `${g.noun} ${i + 1} entfernen`;
  });
  $(g.empty).hidden = rows.length > 0;
}

// ---- reading and checking the form ---------------------------------------

function value(row, field) {
  const e = row.querySelector(`[data-field=${field}]`);
  if (e.dataset.group === "radio") {
    const r = e.querySelector("input[type=radio]:checked");
    return r ? r.value : "";
  }
  // Bidirectional controls are invisible and could make a name display as
  // another in the office's software: drop them.
  return e.value.replace(/[\u202a-\u202e\u2066-\u2069]/g, "").trim();
}

// incomplete reports whether a date field holds a partial entry (such as a
// day and month without a year), which its value does not show.
function incomplete(row, field) {
  const e = row.querySelector(`[data-field=${field}]`);
  return !!(e.validity && e.validity.badInput);
}

function rowIsEmpty(row) {
  return [...row.querySelectorAll("input, textarea")].every((e) =>
    e.type === "radio" ? !e.checked : e.value.trim() === "" && !(e.validity && e.validity.badInput));
}

const INCOMPLETE_DATE = "Bitte geben Sie ein vollständiges Datum an (Tag, Monat und Jahr).";
const INCOMPLETE_TIME = "Bitte geben Sie Datum und Uhrzeit vollständig an (Tag, Monat, Jahr, Stunde und Minute).";

const EMAIL_RE = /^[^\s@]+@[^\s@]+\.[^\s@]+$/;
// validPhone is the contact-data model's rule (eps/contactdata): at most 30
// characters, an optional + and (, then digits, spaces and ( ) / -, ending
// in a digit, with at least 5 digits.
function validPhone(s) {
  if (s.length > 30) return false;
  const rest = s.replace(/^\+/, "").replace(/^\(/, "");
  return /^[0-9][0-9 ()/-]*$/.test(rest) && /[0-9]$/.test(rest) && (rest.match(/[0-9]/g) || []).length >= 5;
}

// nameProblem checks a first or last name by the contact-data model's rule
// (nameRule in eps/contactdata, which ParseSubmission applies too): at most
// 100 characters (code points), only letters, combining marks (a decomposed
// ü), spaces, hyphens and the apostrophes ' and ’, at least one letter, no
// space at either end (value() has trimmed it). It returns what is wrong in
// a sentence that names the field (label "Vorname" or "Nachname"), or "".
// \p{L} and \p{M} are the Unicode categories Go's unicode.IsLetter and
// unicode.M test; the browser's Unicode may be a version newer than Go's.
const MAX_NAME = 100;
const NAME_CHARS = /^[\p{L}\p{M} '’-]*$/u;
const NAME_LETTER = /\p{L}/u;

function nameProblem(s, label) {
  if ([...s].length > MAX_NAME) return `Der ${label} darf höchstens ${MAX_NAME} Zeichen lang sein.`;
  if (!NAME_CHARS.test(s)) {
    return `Der ${label} darf nur Buchstaben, Leerzeichen, Bindestriche und Apostrophe enthalten, also zum Beispiel keinen Titel wie „Dr.“ und keine Ziffern.`;
  }
  if (!NAME_LETTER.test(s)) return `Der ${label} muss mindestens einen Buchstaben enthalten.`;
  return "";
}

// checkContact returns the contact's problems as [field, message, atGroup]:
// atGroup says the message is about the field's group (say it at the
// group's legend), as "one of these" is.
function checkContact(row) {
  const errs = [];
  const v = (f) => value(row, f);
  if (!v("first-name") && !v("last-name")) {
    errs.push(["first-name", "Bitte geben Sie den Vornamen, den Nachnamen oder beide an.", true]);
  }
  for (const [field, label] of [["first-name", "Vorname"], ["last-name", "Nachname"]]) {
    const problem = v(field) && nameProblem(v(field), label);
    if (problem) errs.push([field, problem]);
  }
  if (!v("phone") && !v("email")) {
    errs.push(["phone", "Bitte geben Sie eine Telefonnummer oder eine E-Mail-Adresse an.", true]);
  } else {
    if (v("phone") && !validPhone(v("phone"))) errs.push(["phone", "Bitte geben Sie eine gültige Telefonnummer an: mindestens 5 Ziffern, dazu nur Leerzeichen und + ( ) / -.", true]);
    if (v("email") && !EMAIL_RE.test(v("email"))) errs.push(["email", "Bitte geben Sie eine gültige E-Mail-Adresse an, zum Beispiel name@beispiel.de."]);
  }
  if (!v("category")) errs.push(["category", "Bitte wählen Sie die Art des Kontakts."]);
  const first = v("first");
  const last = v("last");
  if (incomplete(row, "first")) errs.push(["first", INCOMPLETE_DATE]);
  if (incomplete(row, "last")) errs.push(["last", INCOMPLETE_DATE]);
  else if (!last) errs.push(["last", "Bitte geben Sie das Datum des letzten Kontakts an (Tag, Monat und Jahr)."]);
  else if (last > today()) errs.push(["last", "Das Datum des letzten Kontakts darf nicht in der Zukunft liegen."]);
  if (first && first > today()) errs.push(["first", "Das Datum des ersten Kontakts darf nicht in der Zukunft liegen."]);
  else if (first && last && first > last) errs.push(["first", "Der erste Kontakt muss vor oder am Tag des letzten Kontakts liegen."]);
  return errs;
}

function checkEvent(row) {
  const errs = [];
  const v = (f) => value(row, f);
  if (!v("name")) errs.push(["name", "Bitte geben Sie eine Bezeichnung an."]);
  if (!v("place")) errs.push(["place", "Bitte geben Sie den Ort oder die Adresse an."]);
  if (incomplete(row, "start")) errs.push(["start", INCOMPLETE_TIME]);
  else if (!v("start")) errs.push(["start", "Bitte geben Sie Datum und Uhrzeit des Beginns an."]);
  if (incomplete(row, "end")) errs.push(["end", INCOMPLETE_TIME]);
  if (v("end") && v("start") && v("end") < v("start")) errs.push(["end", "Das Ende muss nach dem Beginn liegen."]);
  return errs;
}

function clearErrors() {
  for (const m of document.querySelectorAll(".error-message")) m.remove();
  for (const e of document.querySelectorAll("[aria-invalid]")) {
    e.removeAttribute("aria-invalid");
    const ids = (e.getAttribute("aria-describedby") || "").split(" ").filter((x) => x && !x.endsWith("-error"));
    if (ids.length) e.setAttribute("aria-describedby", ids.join(" "));
    else e.removeAttribute("aria-describedby");
  }
  $("error-list").replaceChildren();
  $("error-summary").hidden = true;
}

// markError puts the message next to the field (after its label or legend,
// or after its group's legend if atGroup) and links it with
// aria-describedby; it returns the element to focus.
function markError(row, field, message, atGroup) {
  const target = row.querySelector(`[data-field=${field}]`);
  const errID = `${target.id}-error`;
  const msg = el("p", { class: "error-message", id: errID }, el("strong", { text: "Fehler: " }), message);
  let focus = target;
  if (target.dataset.group === "radio") {
    target.querySelector("legend").after(msg);
    focus = target.querySelector("input[type=radio]");
  } else if (atGroup) {
    // "phone or email", "first or last name" are about the group: say it
    // at the group.
    const group = target.closest("fieldset");
    group.querySelector("legend").after(msg);
  } else {
    row.querySelector(`label[data-for=${field}]`).after(msg);
  }
  target.setAttribute("aria-invalid", "true"); // the input, or the radio group's fieldset
  const ids = (target.getAttribute("aria-describedby") || "").split(" ").filter(Boolean);
  target.setAttribute("aria-describedby", [...ids, errID].join(" "));
  return focus;
}

function validate() {
  clearErrors();
  const problems = []; // [focus element, text]
  let entries = 0;
  for (const kind of ["contact", "event"]) {
    const g = GROUPS[kind];
    [...$(g.list).children].forEach((row, i) => {
      if (rowIsEmpty(row)) return;
      entries++;
      const errs = kind === "contact" ? checkContact(row) : checkEvent(row);
      for (const [field, message, atGroup] of errs) {
        problems.push([markError(row, field, message, atGroup), `${g.noun} ${i + 1}: ${message}`]);
      }
    });
  }
  if (entries === 0) {
    problems.push([$("add-contact"), "Bitte erfassen Sie mindestens eine Kontaktperson oder ein Ereignis."]);
  }
  if (problems.length === 0) return true;
  const list = $("error-list");
  for (const [target, text] of problems) {
    const a = el("a", { href: `#${target.id}`, text });
    a.addEventListener("click", (ev) => {
      ev.preventDefault(); // never change location.hash: it holds the secret
      target.focus();
    });
    list.append(el("li", {}, a));
  }
  $("error-summary-title").textContent = problems.length === 1
    ? "Bitte korrigieren Sie 1 Angabe"
    : `Bitte korrigieren Sie ${problems.length} Angaben`;
  $("error-summary").hidden = false;
  $("error-summary").focus();
  return false;
}

function collect() {
  const contacts = [];
  const events = [];
  for (const row of $("contact-list").children) {
    if (rowIsEmpty(row)) continue;
    const c = {};
    if (value(row, "first-name")) c.first_name = value(row, "first-name");
    if (value(row, "last-name")) c.last_name = value(row, "last-name");
    if (value(row, "phone")) c.phone = value(row, "phone");
    if (value(row, "email")) c.email = value(row, "email");
    c.category = value(row, "category");
    if (value(row, "first")) c.first_contact = value(row, "first");
    c.last_contact = value(row, "last");
    if (value(row, "note")) c.note = value(row, "note");
    contacts.push(c);
  }
  for (const row of $("event-list").children) {
    if (rowIsEmpty(row)) continue;
    const e = { name: value(row, "name"), place: value(row, "place"), start: value(row, "start") };
    if (value(row, "end")) e.end = value(row, "end");
    if (value(row, "note")) e.note = value(row, "note");
    events.push(e);
  }
  return {
    format: FORMAT,
    label: state.info.label,
    submitted_at: new Date().toISOString().replace(/\.\d{3}Z$/, "Z"),
    contacts,
    events,
  };
}

// ---- review --------------------------------------------------------------

const CATEGORY = {
  household: "Im selben Haushalt",
  close: "Enger Kontakt",
  work: "Arbeit, Schule oder Kinderbetreuung",
  other: "Sonstiger Kontakt",
};

function dl(pairs) {
  const d = el("dl", { class: "review-list" });
  for (const [k, v] of pairs) {
    if (!v) continue;
    d.append(el("dt", { text: k }), el("dd", { text: v }));
  }
  return d;
}

function renderReview(s) {
  const out = $("review-content");
  out.replaceChildren();
  const section = (title, items, render) => {
    out.append(el("h3", { text: `${title} (${items.length})` }));
    if (items.length === 0) {
      out.append(el("p", { text: "Keine Angaben." }));
      return;
    }
    const ol = el("ol", { class: "review-entries" });
    items.forEach((x, i) => ol.append(el("li", {}, render(x, i))));
    out.append(ol);
  };
  section("Kontaktpersonen", s.contacts, (c, i) => {
    const box = el("div");
    const name = [c.first_name, c.last_name].filter(Boolean).join(" ");
    box.append(el("h4", { text: `Kontaktperson ${i + 1}: ${name}` }), dl([
      ["Vorname", c.first_name],
      ["Nachname", c.last_name],
      ["Telefonnummer", c.phone],
      ["E-Mail-Adresse", c.email],
      ["Art des Kontakts", CATEGORY[c.category]],
      ["Erster Kontakt", c.first_contact && germanDate(c.first_contact)],
      ["Letzter Kontakt", germanDate(c.last_contact)],
      ["Anmerkungen", c.note],
    ]));
    return box;
  });
  section("Ereignisse", s.events, (e, i) => {
    const box = el("div");
    box.append(el("h4", { text: `Ereignis ${i + 1}: ${e.name}` }), dl([
      ["Ort oder Adresse", e.place],
      ["Beginn", germanDateTime(e.start)],
      ["Ende", e.end && germanDateTime(e.end)],
      ["Anmerkungen", e.note],
    ]));
    return box;
  });
}

// ---- sending -------------------------------------------------------------

async function send() {
  if (state.sending) return;
  state.sending = true;
  const button = $("send");
  button.setAttribute("aria-disabled", "true"); // keeps focus, unlike disabled
  button.textContent = "Wird übermittelt …";
  clearAlert();
  announce("Ihre Angaben werden verschlüsselt und übermittelt. Bitte warten.");
  try {
    const info = state.info;
    const plaintext = new TextEncoder().encode(JSON.stringify(collect()));
    const sealed = await sealFor({
      recipientKey: info.key,
      recipient: info.recipient,
      service: info.service,
      kind: info.kind,
      messageId: info.message_id,
    }, plaintext);
    const body = JSON.stringify({ message_id: info.message_id, sealed });
    if (body.length > MAX_BODY) {
      showAlert("Ihre Angaben sind zu umfangreich für eine Übermittlung. Bitte kürzen Sie die Anmerkungen.");
      return;
    }
    let res;
    try {
      res = await fetch("/submit", {
        method: "POST",
        headers: { "Authorization": `Bearer ${state.secret}`, "Content-Type": "application/json" },
        body,
        credentials: "omit",
        cache: "no-store",
        redirect: "error",
        referrerPolicy: "no-referrer",
      });
    } catch {
      showAlert("Die Verbindung ist fehlgeschlagen. Ihre Angaben sind noch da: Bitte prüfen Sie Ihre Internetverbindung und versuchen Sie es erneut.");
      return;
    }
    if (res.ok) {
      let when = new Date();
      try {
        const t = new Date((await res.json()).received_at);
        if (!isNaN(t)) when = t;
      } catch {
        // keep the local time
      }
      done(when);
      return;
    }
    const reason = await refusal(res);
    if (reason) {
      forget();
      dead("Übermittlung nicht möglich", reason);
    } else if (res.status === 409) {
      showAlert("Ihre Angaben werden bereits übermittelt. Bitte warten Sie einen Moment und laden Sie die Seite dann neu.");
    } else if (res.status === 413) {
      showAlert("Ihre Angaben sind zu umfangreich für eine Übermittlung. Bitte kürzen Sie die Anmerkungen.");
    } else {
      showAlert("Die Übermittlung ist fehlgeschlagen. Ihre Angaben sind noch da: Bitte versuchen Sie es in einigen Minuten erneut.");
    }
  } catch (err) {
    showAlert("Ihre Angaben konnten nicht verschlüsselt werden. Bitte verwenden Sie einen aktuellen Browser.");
    console.error(err); // the error names no data, only what failed
  } finally {
    state.sending = false;
    button.removeAttribute("aria-disabled");
    button.textContent = "Verschlüsselt übermitteln";
    if (!$("alert").hidden) $("alert").focus();
  }
}

// forget drops the secret and the entered data from the page.
function forget() {
  state.secret = null;
  $("contact-list").replaceChildren();
  $("event-list").replaceChildren();
  $("review-content").replaceChildren();
  history.replaceState(null, "", location.pathname); // the used secret leaves the address bar
}

function done(when) {
  forget();
  $("done-time").textContent = germanInstant(when);
  show("step-done");
  announce("Ihre Angaben wurden übermittelt.");
}

// ---- start ---------------------------------------------------------------

async function supported() {
  try {
    await crypto.subtle.generateKey({ name: "X25519" }, false, ["deriveBits"]);
    return true;
  } catch {
    return false;
  }
}

function validInfo(i) {
  return i && typeof i.label === "string" && typeof i.recipient === "string" && typeof i.display_name === "string" &&
    typeof i.service === "string" && typeof i.kind === "string" && typeof i.message_id === "string" &&
    typeof i.expires === "string" && i.key && i.key.kem === 32 && typeof i.key.public === "string";
}

async function start() {
  // The skip link must not change location.hash: it holds the secret.
  document.querySelector(".skip-link").addEventListener("click", (ev) => {
    ev.preventDefault();
    $("main").focus();
  });

  // Another link pasted into this tab changes only the fragment: start over.
  window.addEventListener("hashchange", () => location.reload());

  const h = location.hash.slice(1);
  if (!/^[A-Za-z0-9_-]{22,128}$/.test(h)) {
    dead("Dieser Link kann nicht verwendet werden", INVALID);
    return;
  }
  state.secret = h;
  if (!globalThis.crypto || !crypto.subtle || !(await supported())) {
    dead("Ihr Browser wird nicht unterstützt",
      "Ihr Browser kann Ihre Angaben nicht verschlüsseln (es fehlt X25519 in WebCrypto). Bitte öffnen Sie den Link in einem aktuellen Browser, zum Beispiel Firefox, Chrome, Edge oder Safari.");
    return;
  }
  let res;
  try {
    res = await fetch("/.well-known/kurier-link", {
      headers: { "Authorization": `Bearer ${state.secret}` },
      credentials: "omit",
      cache: "no-store",
      redirect: "error",
      referrerPolicy: "no-referrer",
    });
  } catch {
    dead("Verbindung fehlgeschlagen", "Die Seite konnte das Gesundheitsamt nicht erreichen. Bitte prüfen Sie Ihre Internetverbindung und laden Sie die Seite neu.");
    return;
  }
  if (!res.ok) {
    dead("Dieser Link kann nicht verwendet werden", (await refusal(res)) || "Das Gesundheitsamt ist gerade nicht erreichbar. Bitte versuchen Sie es später erneut.");
    return;
  }
  let info;
  try {
    info = await res.json();
  } catch {
    info = null;
  }
  if (!validInfo(info)) {
    dead("Dieser Link kann nicht verwendet werden", "Die Angaben des Gesundheitsamts sind unvollständig. Bitte wenden Sie sich an Ihr Gesundheitsamt.");
    return;
  }
  state.info = info;
  $("office-name").textContent = info.display_name;
  for (const e of document.querySelectorAll(".js-office")) e.textContent = info.display_name;
  for (const e of document.querySelectorAll(".js-label")) e.textContent = info.label;
  for (const e of document.querySelectorAll(".js-expires")) e.textContent = germanInstant(new Date(info.expires));
  document.title = `Kontaktpersonen und Ereignisse übermitteln – ${info.display_name}`;

  $("add-contact").addEventListener("click", () => addRow("contact", true));
  $("add-event").addEventListener("click", () => addRow("event", true));
  $("entry-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    clearAlert();
    if (!validate()) return;
    renderReview(collect());
    show("step-review", $("review-title"));
  });
  $("back-to-form").addEventListener("click", () => {
    clearAlert();
    show("step-form", $("form-title"));
  });
  $("send").addEventListener("click", send);
  addRow("contact", false);
  show("step-form", $("form-title"));
}

start();
